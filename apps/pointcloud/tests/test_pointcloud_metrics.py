"""mIoU/mAcc/allAcc on hand-made confusion cases; the Lovász-softmax loss against the Jaccard index and against a
brute-force Lovász extension (threshold integral and the max over all orderings)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ffnet_pointcloud.losses import SegmentationLoss, lovasz_softmax
from ffnet_pointcloud.metrics import ConfusionMatrix, format_table, segmentation_metrics


def test_perfect_prediction() -> None:
    cm = ConfusionMatrix(3)
    y = torch.tensor([0, 1, 2, 2, 1])
    cm.update(y, y)
    m = cm.compute(["a", "b", "c"])
    assert m["mIoU"] == 1.0 and m["mAcc"] == 1.0 and m["allAcc"] == 1.0


def test_hand_computed_case() -> None:
    # target: 4 x class0, 2 x class1, 2 x class2 ; predictions chosen so every ratio is easy to check by hand
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2, 0])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[3, 1, 0], [1, 1, 0], [1, 0, 1]]
    m = cm.compute()
    # IoU0 = 3 / (4 + 5 - 3) = 1/2 ; IoU1 = 1 / (2 + 2 - 1) = 1/3 ; IoU2 = 1 / (2 + 1 - 1) = 1/2
    assert m["per_class"]["0"]["iou"] == pytest.approx(0.5)
    assert m["per_class"]["1"]["iou"] == pytest.approx(1 / 3)
    assert m["per_class"]["2"]["iou"] == pytest.approx(0.5)
    assert m["mIoU"] == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    assert m["mAcc"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    assert m["allAcc"] == pytest.approx(5 / 8)


def test_ignore_index_and_absent_classes() -> None:
    cm = ConfusionMatrix(4, ignore_index=-1)
    cm.update(torch.tensor([0, 1, 3, 3]), torch.tensor([0, 1, -1, -1]))
    m = cm.compute()
    assert m["num_points"] == 2 and m["mIoU"] == 1.0
    assert m["per_class"]["2"]["iou"] is None and m["per_class"]["3"]["iou"] is None
    # a class predicted but never present counts as IoU 0 (false positives), and pulls mIoU down
    cm.update(torch.tensor([2]), torch.tensor([0]))
    m = cm.compute()
    assert m["per_class"]["2"]["iou"] == 0.0
    assert m["mIoU"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert "mIoU" in format_table(m)


def test_all_wrong_and_accumulation() -> None:
    a = ConfusionMatrix(2)
    a.update(np.array([1, 1, 0]), np.array([0, 0, 1]))
    assert a.compute()["mIoU"] == 0.0 and a.compute()["allAcc"] == 0.0
    a.update(np.array([0, 1]), np.array([0, 1]))
    m = segmentation_metrics(a.matrix)
    assert m["allAcc"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="outside"):
        a.update(np.array([0]), np.array([5]))


def test_lovasz_equals_one_minus_iou_for_hard_predictions() -> None:
    """For one-hot probabilities the Lovász extension equals the Jaccard loss exactly, per class."""
    target = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 1, 2, 2, 2, 0, 2])
    probs = torch.nn.functional.one_hot(pred, 3).double()
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    ious = [v["iou"] for v in cm.compute()["per_class"].values()]
    expected = float(np.mean([1 - i for i in ious]))
    assert lovasz_softmax(probs, target).item() == pytest.approx(expected)
    assert lovasz_softmax(torch.nn.functional.one_hot(target, 3).double(), target).item() == pytest.approx(
        0.0
    )


def _jaccard_loss(mistakes: frozenset[int], foreground: frozenset[int]) -> float:
    """Delta_J(M) = |M| / |F u M|: the Jaccard loss of class c when the points in M are mispredicted."""
    union = foreground | mistakes
    return len(mistakes) / len(union) if union else 0.0


def _lovasz_by_thresholds(errors: list[float], foreground: frozenset[int]) -> float:
    """Lovász extension as the integral over t in [0, 1] of Delta({i : e_i > t}), summed exactly over the
    intervals between consecutive error values: no sorting trick, only the definition."""
    levels = sorted({0.0, *errors})
    total = 0.0
    for lo, hi in zip(levels, levels[1:] + [1.0]):
        above = frozenset(i for i, e in enumerate(errors) if e > lo)
        total += (hi - lo) * _jaccard_loss(above, foreground)
    return total


def _lovasz_by_orderings(errors: list[float], foreground: frozenset[int]) -> float:
    """The Jaccard loss is submodular, so its Lovász extension is the max over every ordering of the points of
    sum_k e_pi(k) * (Delta(first k) - Delta(first k-1)) (Edmonds' greedy theorem), checked by enumeration."""
    best = -np.inf
    for order in itertools.permutations(range(len(errors))):
        value, prefix = 0.0, frozenset()
        for i in order:
            grown = prefix | {i}
            value += errors[i] * (_jaccard_loss(grown, foreground) - _jaccard_loss(prefix, foreground))
            prefix = grown
        best = max(best, value)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_softmax_equals_brute_force_lovasz_extension(seed: int) -> None:
    """Soft probabilities on 6 points x 3 classes (+ an ignored point): per class, the loss equals the Lovász
    extension of the Jaccard loss computed two independent ways; the mean runs over the classes present."""
    rng = np.random.default_rng(seed)
    probs = torch.from_numpy(rng.dirichlet(np.ones(3), 7)).double()
    target = torch.tensor([0, 0, 1, 1, 1, 0, -1]) if seed != 2 else torch.tensor([0, 1, 1, 0, 0, 1, -1])
    keep = target != -1
    per_class = []
    for c in range(3):
        fg = frozenset(int(i) for i in torch.nonzero(target[keep] == c).flatten())
        if not fg:
            continue  # classes="present": a class absent from the labels is left out
        errors = [abs(float(target[keep][i] == c) - float(probs[keep][i, c])) for i in range(int(keep.sum()))]
        by_thresholds = _lovasz_by_thresholds(errors, fg)
        assert by_thresholds == pytest.approx(_lovasz_by_orderings(errors, fg), abs=1e-12)
        per_class.append(by_thresholds)
    assert len(per_class) == 2  # class 2 never occurs in the labels
    assert lovasz_softmax(probs, target, ignore_index=-1).item() == pytest.approx(np.mean(per_class), abs=1e-12)


def test_segmentation_loss_combines_ce_and_lovasz_with_ignore() -> None:
    torch.manual_seed(0)
    logits = torch.randn(20, 4, requires_grad=True)
    target = torch.randint(0, 4, (20,))
    target[:5] = -1
    loss = SegmentationLoss(ignore_index=-1)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=-1)
    lv = lovasz_softmax(logits.softmax(1), target, -1)
    assert loss.item() == pytest.approx((ce + lv).item())
    loss.backward()
    assert logits.grad[:5].abs().sum() == 0  # ignored points get no gradient
    all_ignored = SegmentationLoss()(logits, torch.full((20,), -1))
    assert all_ignored.item() == 0.0

"""mIoU/mAcc/allAcc on hand-made confusion cases; the Lovász-softmax loss against the Jaccard index."""

from __future__ import annotations

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

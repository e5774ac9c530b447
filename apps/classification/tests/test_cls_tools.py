"""Export (ONNX in onnxruntime, TorchScript), evaluate/predict CLIs, recipes, bench helpers."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from ffnet_classification import create_model
from ffnet_classification.config import ClsConfig
from metamixer.train.checkpoint import save_checkpoint
from metamixer.train.config import ConfigError, config_from_dict, config_to_dict, load_config
from metamixer.train.errors import FFNetError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = {"widths": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "stem_dim": 8}


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint in our run format (config + class names inside) and a 3-class val folder of real PNGs."""
    root = tmp_path_factory.mktemp("tools")
    classes = ["circle", "square", "stripe"]
    for ci, name in enumerate(classes):
        for j in range(4):
            arr = torch.zeros(24, 24, 3, dtype=torch.uint8)
            arr[..., ci] = 60 * (j + 1)
            (root / "val" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.numpy()).save(root / "val" / name / f"{j}.png")
    cfg = config_from_dict(ClsConfig, {"model": {"name": "ffnet_1", "spec": TINY},
                                       "data": {"input_size": 32, "crop_pct": 1.0}, "train": {"epochs": 1}})
    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=3, **TINY)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    ema = type("E", (), {"state_dict": lambda self: model.state_dict(), "updates": 3})()
    path = save_checkpoint(root / "best.pth", model=model, ema=ema, epoch=1, config=cfg,
                           extra={"task": {"classes": classes, "model_name": "ffnet_1"}})
    return path, root / "val"


def test_onnx_and_torchscript_export_match_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from ffnet_classification.export import export_model

    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=10, drop_path_rate=0.3,
                         **dict(TINY, channel_kernels=[7, 7, 7, 7], layer_scale_init=1e-2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = export_model(model, tmp_path, "tiny", input_size=64)
    # the legacy TorchScript-based ONNX exporter (dynamo=False) warns DeprecationWarning in torch 2.13
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not deprecations, deprecations
    onnx_r, ts_r = report["onnx"], report["torchscript"]
    assert onnx_r["max_abs_diff"] < 1e-4 and ts_r["max_abs_diff"] < 1e-4
    assert not onnx_r["forbidden_ops"] and not ts_r["forbidden_ops"]
    assert "BatchNormalization" not in onnx_r["ops"] or onnx_r["ops"].count("BatchNormalization") == 1
    assert Path(onnx_r["path"]).is_file() and Path(ts_r["path"]).is_file()
    assert onnx_r["opset"] == 18 and onnx_r["checked_batch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "tiny_64.onnx", "tiny_64.pt"]  # no .data
    # the fused graph is smaller: no BN of the mixers, one DW conv per RepVGG block
    import onnx
    import onnxruntime as ort

    proto = onnx.load(onnx_r["path"])
    convs = sum(n.op_type == "Conv" for n in proto.graph.node)
    fused = model.fuse().eval()
    fused_convs = sum(isinstance(m, torch.nn.Conv2d) for m in fused.modules())
    assert convs == fused_convs < sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    # the promised dynamic batch: symbolic in the graph, and a batch of 3 (example: 1) runs and matches
    assert [(i.name, i.type.tensor_type.shape.dim[0].dim_param) for i in proto.graph.input] == [("images", "batch")]
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    sess = ort.InferenceSession(onnx_r["path"], providers=["CPUExecutionProvider"])
    (out,) = sess.run(["logits"], {"images": x.numpy()})
    with torch.no_grad():
        ref = fused(x)
    assert out.shape == (3, 10) and torch.allclose(torch.from_numpy(out), ref, atol=1e-4)


def test_failed_export_leaves_no_file_and_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ffnet_classification import export

    real = export.export_torchscript

    def off_by_one(*args: object, **kwargs: object) -> dict:
        report = real(*args, **kwargs)
        return {**report, "max_abs_diff": 1.0}  # as if the exported graph computed something else

    monkeypatch.setattr(export, "export_torchscript", off_by_one)
    model = create_model("ffnet_1", num_classes=3, **TINY)
    existing = tmp_path / "existing"
    existing.mkdir()
    for out in (tmp_path / "new" / "deep", existing):
        with pytest.raises(FFNetError, match=r"torchscript output differs from PyTorch by 1 > 0.0001"):
            export.export_model(model, out, "tiny", input_size=32, formats=["torchscript"])
    assert not (tmp_path / "new").exists() and list(existing.iterdir()) == []
    with pytest.raises(FFNetError, match="unknown export format"):
        export.export_model(model, tmp_path / "other", formats=["tflite"])
    assert not (tmp_path / "other").exists()


def test_evaluate_fused_by_default_unfused_and_ema_results_json(run_checkpoint: tuple[Path, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from ffnet_classification.evaluate import cli

    ckpt, val = run_checkpoint
    out = tmp_path / "r.json"
    cli(["--checkpoint", str(ckpt), "--data", str(val), "--workers", "0", "--unfused", "--output", str(out)])
    plain = json.loads(out.read_text())
    cli(["--checkpoint", str(ckpt), "--data", str(val), "--workers", "0", "--ema", "--output", str(out)])
    fused = json.loads(out.read_text())
    assert "top-1" in capsys.readouterr().out
    assert plain["protocol"]["samples"] == fused["protocol"]["samples"] == 12
    assert fused["protocol"]["fused"] and fused["protocol"]["ema"] and not plain["protocol"]["fused"]
    assert plain["metrics"]["top1"] == fused["metrics"]["top1"]
    assert fused["metrics"]["loss"] == pytest.approx(plain["metrics"]["loss"], rel=1e-4)
    assert 0.0 <= plain["metrics"]["top1"] <= 100.0 and plain["metrics"]["top5"] == 100.0  # 3 classes
    assert fused["checkpoint"] == str(ckpt) and fused["data"] == str(val) and fused["wall_s"] > 0
    with pytest.raises(SystemExit):
        cli(["--checkpoint", str(ckpt), "--data", str(val), "eval.batch_size=4"])
    assert "takes no key=value overrides" in capsys.readouterr().err


def test_predict_topk_with_class_names(run_checkpoint: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    from ffnet_classification.predict import cli, predict

    ckpt, val = run_checkpoint
    res = predict(str(ckpt), [str(val / "square")], topk=2)
    assert len(res) == 4 and all(len(r["top"]) == 2 for r in res)
    assert {t["class"] for r in res for t in r["top"]} <= {"circle", "square", "stripe"}
    for r in res:
        probs = [t["prob"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-5
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    cli(["--checkpoint", str(ckpt), "--classes", str(names), "--topk", "1", str(val / "circle" / "0.png")])
    line = json.loads(capsys.readouterr().out.strip())
    assert line["top"][0]["class"] in {"a", "b", "c"}
    names.write_text("a\nb\n")
    with pytest.raises(SystemExit):
        cli(["--checkpoint", str(ckpt), "--classes", str(names), str(val)])
    assert "2 class names but the model predicts 3" in capsys.readouterr().err


def test_every_shipped_recipe_loads_and_follows_the_official_recipe(tmp_path: Path) -> None:
    names = sorted(p.name for p in RECIPES.glob("*.yaml"))
    assert {"ffnet_1.yaml", "ffnet_2.yaml", "ffnet_3.yaml", "ffnet_4.yaml", "ffnet_3_384_ft.yaml",
            "ffnet_4_384_ft.yaml", "ffnet_1_kd.yaml", "ffnet_2_kd.yaml", "ffnet_3_kd.yaml",
            "cpu_digits.yaml"} == set(names)
    cfgs = {n: load_config(ClsConfig, RECIPES / n) for n in names}  # unknown keys would raise here
    for n in names:
        c = cfgs[n]
        assert c.run.seed == 42 and c.train.ema_decay is not None and c.optim.name == "adamw", n
    for n in ("ffnet_1.yaml", "ffnet_2.yaml", "ffnet_3.yaml", "ffnet_4.yaml", "ffnet_1_kd.yaml"):
        c = cfgs[n]
        assert c.train.epochs == 300 and c.train.batch_size == 128 and c.train.ema_decay == 0.9995, n
        assert c.optim.lr is None and c.optim.base_lr == 1e-3 and c.optim.lr_base_batch == 1024, n
        assert c.optim.weight_decay == 0.05 and c.optim.warmup_epochs == 5 and c.optim.warmup_lr == 1e-6, n
        assert c.optim.min_lr == 1e-5 and c.optim.schedule == "cosine" and c.run.precision == "fp16", n
        assert c.data.input_size == 256 and c.data.label_smoothing == 0.1, n
    assert [cfgs[f"ffnet_{i}.yaml"].model.drop_path_rate for i in (1, 2, 3, 4)] == [0.1, 0.15, 0.35, 0.4]
    assert cfgs["ffnet_1.yaml"].data.mixup == 0.2 and cfgs["ffnet_3.yaml"].data.mixup == 0.8
    assert cfgs["ffnet_3.yaml"].run.output_dir == "runs/ffnet_3_in1k"
    ft = cfgs["ffnet_3_384_ft.yaml"]
    assert ft.optim.lr == 5e-6 and ft.train.epochs == 30 and ft.optim.schedule == "constant"
    assert ft.optim.weight_decay == 1e-8 and ft.optim.warmup_epochs == 0 and ft.data.input_size == 384
    assert ft.model.pretrained_ema and ft.train.batch_size == 64
    kd = cfgs["ffnet_1_kd.yaml"].train.distill
    assert kd.type == "hard" and kd.alpha == 0.5 and kd.teacher_model == "timm:regnety_160"
    assert cfgs["ffnet_1_kd.yaml"].model.drop_path_rate == 0.02
    digits = cfgs["cpu_digits.yaml"]
    assert digits.train.ema_warmup and digits.train.eval_weights == "ema" and digits.train.log_every == 10
    assert digits.run.threads == 2 and digits.optim.lr_base_batch == 64
    # unknown keys are rejected, with the dotted key named
    bad = tmp_path / "bad.yaml"
    bad.write_text((RECIPES / "ffnet_1.yaml").read_text().replace("  epochs: 300", "  epochs: 300\n  epoch: 3"))
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        load_config(ClsConfig, bad)
    with pytest.raises(ConfigError, match="'train.batch_size' must be a finite number >= 1"):
        load_config(ClsConfig, RECIPES / "ffnet_1.yaml", ["train.batch_size=0"])


def test_quickstart_recipe_matches_cpu_yaml() -> None:
    from ffnet_classification.quickstart import RECIPE

    from_yaml = config_to_dict(load_config(ClsConfig, RECIPES / "cpu_digits.yaml"))
    from_code = config_to_dict(config_from_dict(ClsConfig, RECIPE))
    for c in (from_yaml, from_code):
        c["run"].pop("output_dir")
        c["data"].pop("train")
        c["data"].pop("val")
    assert from_yaml == from_code


def test_lr_scaling_and_weight_decay_groups() -> None:
    from ffnet_classification.config import ClsOptimConfig, resolve_lr
    from ffnet_classification.optim import build_optimizer, param_groups

    cfg = ClsOptimConfig()
    assert resolve_lr(cfg, 1024) == pytest.approx(1e-3) and resolve_lr(cfg, 256) == pytest.approx(2.5e-4)
    assert resolve_lr(ClsOptimConfig(lr=5e-6), 4096) == 5e-6
    model = create_model("ffnet_3", **dict(TINY, layer_scale_init=1e-6))
    no_decay, decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    nd_names = [names[id(p)] for p in no_decay["params"]]
    assert all(n.endswith(("bias", "weight", "layer_scale")) for n in nd_names)
    assert any(n.endswith("layer_scale") for n in nd_names) and any(".bn." in n for n in nd_names)
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.05
    opt = build_optimizer(model, ClsOptimConfig(lr=1e-3, weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW) and [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.05]


def test_bench_peer_and_flops_table() -> None:
    from ffnet_classification.bench import convnext_tiny, flops_table, run_benchmark

    with torch.device("meta"):
        peer = convnext_tiny()
    assert sum(p.numel() for p in peer.parameters()) == 28_589_128  # ConvNeXt-T as published
    rows = {(r["model"], r["resolution"]): r for r in flops_table({"ffnet_1": [256]})}
    assert rows[("ffnet_1", 256)]["gmacs_fused"] == pytest.approx(2.985, abs=6e-4)
    assert rows[("convnext_t (peer)", 256)]["gmacs_fused"] == pytest.approx(4.47 * (256 / 224) ** 2, rel=0.01)
    rep = run_benchmark("ffnet_1", batch_sizes=[1], layouts=["contiguous"], forms=["fused"], resolution=64,
                        threads=1, rounds=1, min_round_s=0.0, warmup=0, log=lambda s: None)
    (row,) = rep["results"]
    assert set(row["img_s"]) == {"ffnet_1_fused", "convnext_t"} and row["img_s"]["ffnet_1_fused"] > 0


def test_hard_distillation_loss_and_teacher_from_checkpoint(run_checkpoint: tuple[Path, Path]) -> None:
    import torch.nn.functional as F

    from ffnet_classification.losses import HardDistillationLoss, SoftTargetCrossEntropy
    from ffnet_classification.train import build_teacher

    ckpt, _ = run_checkpoint
    cfg = config_from_dict(ClsConfig, {"train": {"epochs": 1, "distill": {"type": "hard",
                                                                          "teacher_checkpoint": str(ckpt)}}})
    teacher = build_teacher(cfg, 3, torch.device("cpu"))  # default teacher_model is ignored: the file knows
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    loss_fn = HardDistillationLoss(SoftTargetCrossEntropy(), teacher, alpha=0.5)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    logits = torch.randn(4, 3, requires_grad=True)
    soft = torch.softmax(torch.randn(4, 3), -1)
    with torch.no_grad():
        t_labels = teacher(x).argmax(-1)
    want = 0.5 * SoftTargetCrossEntropy()(logits, soft) + 0.5 * F.cross_entropy(logits, t_labels)
    got = loss_fn(x, logits, soft)
    assert torch.allclose(got, want)
    got.backward()
    assert logits.grad is not None
    with pytest.raises(Exception, match="predicts 3 classes"):
        build_teacher(cfg, 10, torch.device("cpu"))


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("onnxruntime")
    from ffnet_classification.quickstart import run_quickstart

    r = run_quickstart(tmp_path, epochs=5)
    assert r["eval_ema"]["top1"] > 85.0 and r["eval_ema_fused"]["top1"] == r["eval_ema"]["top1"]
    assert r["export"]["onnx"]["max_abs_diff"] < 1e-4
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["quickstart"]["dataset"]["val"] == 359 and record["metrics"]["top1"] == r["eval_ema_fused"]["top1"]

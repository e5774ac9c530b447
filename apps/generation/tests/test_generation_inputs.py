"""Bad user input inside the app: latent extraction past unreadable images, grey reading of transparent images,
and the write helpers that leave nothing half-written (the console-script side is tests/test_cli_generation.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ffnet_generation.data.images import load_image
from ffnet_generation.data.latents import LatentDataset
from ffnet_generation.extract_latents import extract_latents
from ffnet_generation.files import save_npz
from metamixer.train.atomic import atomic_write
from metamixer.train.errors import FFNetError
from metamixer.train.outputs import created_folder


def _encoder(x: torch.Tensor) -> torch.Tensor:
    """Stand-in for the VAE encoder (no diffusers needed): 8x average pool plus a 4th channel."""
    z = torch.nn.functional.avg_pool2d(x, 8)
    return torch.cat([z, z.mean(1, keepdim=True)], dim=1)


def _folder(root, good: int, bad: bool = True):
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    for i in range(good):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / "a" / f"{i}.png")
    if bad:
        (root / "a" / "empty.png").write_bytes(b"")
        (root / "a" / "text.jpg").write_text("not an image")
    return root


def test_extract_latents_goes_past_unreadable_images(tmp_path, capsys):
    images = _folder(tmp_path / "imgs", good=3)
    out = tmp_path / "lat"
    meta = extract_latents(str(images), "", str(out), image_size=16, batch_size=2, num_workers=1, device="cpu",
                           encoder=_encoder)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "empty.png" in err[0] and "text.jpg" in err[1], err
    assert "Traceback" not in "\n".join(err)  # a worker's failure is not re-raised with its traceback text
    assert meta["images"] == 3 and [Path(p).name for p in meta["skipped"]] == ["empty.png", "text.jpg"]
    assert json.loads((out / "meta.json").read_text())["skipped"] == meta["skipped"]
    assert len(LatentDataset(out)) == 3 and not (tmp_path / ".lat.partial").exists()
    with pytest.raises(FFNetError, match="exists and is not empty"):  # old shards would mix with new ones
        extract_latents(str(images), "", str(out), image_size=16, encoder=_encoder, device="cpu", num_workers=0)


def test_extract_latents_of_only_bad_images_writes_nothing(tmp_path, capsys):
    images = _folder(tmp_path / "imgs", good=0)
    with pytest.raises(FFNetError, match="none of the 2 images could be read"):
        extract_latents(str(images), "", str(tmp_path / "lat"), image_size=16, num_workers=0, device="cpu",
                        encoder=_encoder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]  # neither the output nor its staging folder
    with pytest.raises(FFNetError, match="--image-size must be a positive multiple of 8"):
        extract_latents(str(images), "", str(tmp_path / "lat"), image_size=12, encoder=_encoder)


def test_grey_reading_shows_transparent_pixels_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2, :, 3] = 255  # top half: opaque black; bottom half: transparent (black underneath)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    grey = np.asarray(load_image(tmp_path / "a.png", 1))
    assert grey.shape == (4, 4) and (grey[:2] == 0).all() and (grey[2:] == 255).all()


def test_writes_are_atomic_and_failed_runs_remove_their_folders(tmp_path):
    target = tmp_path / "samples.npz"
    save_npz(target, arr_0=np.arange(3))

    def half_then_crash(handle) -> None:
        handle.write(b"half a file")
        raise RuntimeError("stopped mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_crash)
    assert np.load(target)["arr_0"].tolist() == [0, 1, 2]  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.npz"]  # no temporary left
    with pytest.raises(KeyboardInterrupt), created_folder(tmp_path / "new" / "deeper"):
        raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError), created_folder(tmp_path):
        raise ValueError
    assert target.is_file()  # a folder that existed before is kept


def test_extract_latents_cli_exits_1_listing_the_left_out_images(tmp_path, capsys, monkeypatch):
    """The console script's folder-run contract (a stand-in VAE: diffusers is optional): per-file lines, the
    summary line last, exit 1, the output complete for the readable images."""
    import types

    from ffnet_generation import extract_latents as module

    monkeypatch.setattr(module, "load_vae", lambda *a, **k: types.SimpleNamespace(encode=_encoder))
    images = _folder(tmp_path / "imgs", good=2)
    with pytest.raises(SystemExit) as exc:
        module.cli(["--images", str(images), "--vae", "stand-in", "--output", str(tmp_path / "lat"),
                    "--image-size", "16", "--num-workers", "0", "--device", "cpu"])
    assert exc.value.code == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err), err
    assert "2 of 4 images could not be read" in err[-1] and "empty.png" in err[-1] and "text.jpg" in err[-1]
    assert '"images": 2' in captured.out and len(LatentDataset(tmp_path / "lat")) == 2

"""Training data: exact on-the-fly LR, determinism by (seed, sample index), layouts, resumable sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffnet_sr.data.dataset import (
    EpochBatchSampler,
    SRTrainDataset,
    epoch_steps,
    find_lr_dir,
    mod_crop,
    to_rgb,
)
from ffnet_sr.data.io import read_rgb_or_grey
from ffnet_sr.imresize import imresize
from metamixer.train.errors import FFNetError


def test_generated_lr_patch_equals_full_image_downscale(sr_data):
    ds = SRTrainDataset([sr_data / "Set5" / "HR"], scale=3, patch_size=24, lr_source="generate")
    hr = mod_crop(to_rgb(read_rgb_or_grey(sr_data / "Set5" / "HR" / "bird.png")), 3)
    full = imresize(hr, 1 / 3)
    h, w = full.shape[:2]
    # interior, both image corners and edges (the windows get clipped at the true border there)
    for top, left in [(0, 0), (h - 24, w - 24), (10, 37), (0, w - 24), (h - 24, 5)]:
        assert np.array_equal(ds.lr_patch_generated(hr, top, left), full[top : top + 24, left : left + 24])


def test_generated_and_provided_lr_give_identical_samples(sr_data):
    kwargs = dict(scale=2, patch_size=32, augment=True, seed=3)
    from_files = SRTrainDataset([sr_data / "Set5" / "HR"], lr_source="folder", **kwargs)
    generated = SRTrainDataset([sr_data / "Set5" / "HR"], lr_source="generate", **kwargs)
    for k in (0, 1, 7, 12):
        lr_a, hr_a = from_files[k]
        lr_b, hr_b = generated[k]
        assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
        assert lr_a.shape == (3, 32, 32) and hr_a.shape == (3, 64, 64)


def test_samples_are_deterministic_and_cover_every_image_each_epoch(sr_data):
    ds = SRTrainDataset([sr_data / "Set14" / "HR"], scale=4, patch_size=16, seed=0)
    a, b = ds[5], ds[5]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    n = len(ds)
    assert sorted(ds.image_index(k) for k in range(n)) == list(range(n))
    assert [ds.image_index(k) for k in range(n)] != [ds.image_index(k) for k in range(n, 2 * n)]
    # grey 'bridge' is replicated to RGB for training
    lr, hr = ds[0]
    assert lr.shape[0] == 3 and 0.0 <= float(lr.min()) and float(hr.max()) <= 1.0


def test_patch_pairs_are_aligned(sr_data):
    """Downscaling the HR patch approximately gives the LR patch (alignment/augmentation applied to both)."""
    ds = SRTrainDataset([sr_data / "Set5" / "HR"], scale=2, patch_size=48, lr_source="folder", augment=True)
    for k in range(6):
        lr, hr = ds[k]
        hr_np = (hr.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
        down = imresize(hr_np, 0.5).astype(float)
        err = np.abs(down[4:-4, 4:-4] - lr.numpy().transpose(1, 2, 0)[4:-4, 4:-4] * 255).mean()
        assert err < 1.0, err


def _epoch(sampler, epoch, start=0):
    sampler.set_position(epoch, start)
    return list(sampler)


def test_epoch_sampler_is_one_resumable_stream_and_rank_disjoint():
    s = EpochBatchSampler(4, steps_per_epoch=3)
    stream = [list(range(4 * t, 4 * t + 4)) for t in range(6)]
    assert _epoch(s, 0) + _epoch(s, 1) == stream  # epochs are consecutive pieces of one sample stream
    assert _epoch(s, 1, start=2) == stream[5:] and len(s) == 1  # mid-epoch resume
    # the epoch length only moves the boundaries: step t gets the same batch for any steps_per_epoch
    longer = EpochBatchSampler(4, steps_per_epoch=6)
    assert _epoch(longer, 0) == stream
    r0 = _epoch(EpochBatchSampler(2, 3, rank=0, world_size=2), 0)
    r1 = _epoch(EpochBatchSampler(2, 3, rank=1, world_size=2), 0)
    flat0, flat1 = sum(r0, []), sum(r1, [])
    assert not set(flat0) & set(flat1) and sorted(flat0 + flat1) == list(range(12))
    # an epoch = enlarge_ratio passes' worth of patches, rounded up, at least one batch
    assert epoch_steps(100, 16) == 7 and epoch_steps(800, 16, 4, enlarge_ratio=100) == 1250
    assert epoch_steps(3, 16, 2) == 1


def test_layouts_and_errors(tmp_path, sr_data):
    assert find_lr_dir(sr_data / "B100" / "HR", 3) == sr_data / "B100" / "LR_bicubic" / "X3"
    div2k = tmp_path / "DIV2K_train_HR"
    div2k.mkdir()
    (tmp_path / "DIV2K_train_LR_bicubic" / "X2").mkdir(parents=True)
    assert find_lr_dir(div2k, 2) == tmp_path / "DIV2K_train_LR_bicubic" / "X2"
    with pytest.raises(FFNetError, match="no images"):
        SRTrainDataset([div2k], 2)
    with pytest.raises(FFNetError, match="not found"):
        SRTrainDataset([tmp_path / "missing"], 2)
    with pytest.raises(FFNetError, match="LR_bicubic/X2"):
        SRTrainDataset([tmp_path], 2, lr_source="folder")
    with pytest.raises(FFNetError, match="too small"):
        SRTrainDataset([sr_data / "Set5" / "HR"], 4, patch_size=200)[0]


def test_training_images_are_checked_up_front_from_their_headers(tmp_path):
    """Too small, a decompression bomb, or an LR file of the wrong size: one message naming the file when the
    dataset is built (before the run folder exists), not later inside a loader worker."""
    import struct
    import zlib

    from PIL import Image

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(hr / "ok.png")
    Image.fromarray(np.zeros((5, 3, 3), np.uint8)).save(hr / "tiny.png")
    with pytest.raises(FFNetError, match=r"tiny\.png: 3x5 pixels is too small .* at least 32x32 pixels"):
        SRTrainDataset([hr], 2, patch_size=16)
    (hr / "tiny.png").unlink()
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # a header declaring 10^10 pixels, no data
    (hr / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    with pytest.raises(FFNetError, match=r"bomb\.png: 100000x100000 = 10,000,000,000 pixels is more than the limit"):
        SRTrainDataset([hr], 2, patch_size=16)
    (hr / "bomb.png").unlink()
    div2k = tmp_path / "DIV2K_train_HR"
    hr.rename(div2k)
    lr = tmp_path / "DIV2K_train_LR_bicubic" / "X2"
    lr.mkdir(parents=True)
    Image.fromarray(np.zeros((19, 20, 3), np.uint8)).save(lr / "okx2.png")
    with pytest.raises(FFNetError, match=r"okx2\.png is 20x19 pixels, expected 20x20"):
        SRTrainDataset([div2k], 2, patch_size=16)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(lr / "okx2.png")
    assert len(SRTrainDataset([div2k], 2, patch_size=16)) == 1

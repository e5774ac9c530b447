"""Every CLI that reads a checkpoint, driven in a fresh interpreter with the checkpoint corpus: exit 2, one line
naming the file, no traceback, nothing written, and pickled code never runs (its marker file never appears)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corpus import assert_one_line_error, checkpoint_corpus, image_corpus, pickled_code_ran, run_cli

pytestmark = pytest.mark.timeout(900)


def _data() -> Path:
    return Path(os.environ.get("FFNET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


#: script -> extra arguments ({ckpt}: the checkpoint, {out}: a folder that must stay absent, {img}: an image)
CLIS = {
    "ffnet-sr-eval": ["--scale", "2", "--sets", "Set5", "--output", "{out}/r.json"],
    "ffnet-sr-upscale": ["--scale", "2", "--output", "{out}", "{img}"],
    "ffnet-cls-eval": ["--data", "{imgdir}", "--output", "{out}/r.json"],
    "ffnet-cls-predict": ["{img}"],
    "ffnet-cls-export": ["--output-dir", "{out}"],
    "ffnet-gen-sample": ["--output", "{out}"],
    "ffnet-gen-eval": ["--output", "{out}/r.json"],
    "ffnet-pc-eval": ["--output", "{out}/r.json"],
    "ffnet-ts-eval": ["--output", "{out}/r.json"],
}

#: what each corpus entry's message must say (beside the file's path)
EXPECTED = {
    "pickled_code.pth": "pickled Python code",
    "truncated.pth": "truncated",
    "foreign.pth": "not a PyTorch checkpoint",
    "text.pth": "not a PyTorch checkpoint",
    "empty.pth": "empty file",
    "wrong_architecture.pth": "",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    images = image_corpus(root / "images")
    imgdir = root / "imgdir" / "cat"
    imgdir.mkdir(parents=True)
    (imgdir / "a.png").write_bytes(images["rgb.png"].read_bytes())
    return {**checkpoint_corpus(root / "ckpt"), "img": images["rgb.png"], "imgdir": imgdir.parent}


def _cases() -> list[tuple[str, str]]:
    # every CLI with the three kinds whose handling could differ per app, one CLI with every kind
    cases = [(cli, kind) for cli in CLIS for kind in ("pickled_code.pth", "truncated.pth", "wrong_architecture.pth")]
    cases += [("ffnet-ts-eval", kind) for kind in ("foreign.pth", "text.pth", "empty.pth")]
    return cases


@pytest.mark.parametrize(("cli", "kind"), _cases(), ids=lambda v: v)
def test_bad_checkpoint_gives_one_line_and_writes_nothing(cli: str, kind: str, files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    ckpt, out = files[kind], tmp_path / "out"
    args = [a.format(out=out, img=files["img"], imgdir=files["imgdir"]) for a in CLIS[cli]]
    result = run_cli(cli, "--checkpoint", str(ckpt), *args, env={"FFNET_DATA": str(_data())})
    assert_one_line_error(result, str(ckpt), EXPECTED[kind])
    assert not out.exists() or not any(out.rglob("*")), f"{cli} left {list(out.rglob('*'))}"
    assert not pickled_code_ran(ckpt.parent)

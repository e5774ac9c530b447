"""metamixer.train.images.open_image on the bad-input corpus: upright, converted, or one message naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus import BAD_IMAGES, image_corpus

from metamixer.train.images import ImageReadError, image_size, open_image


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return image_corpus(tmp_path_factory.mktemp("images"))


def test_good_files_come_out_upright_rgb(corpus: dict[str, Path]) -> None:
    reference = np.asarray(open_image(corpus["rgb.png"]), dtype=np.int16)
    for name in ("rgb.png", "grey.png", "rgba.png", "palette.png", "cmyk.jpg", "grey16.png"):
        img = open_image(corpus[name])
        assert img.mode == "RGB" and img.size == (40, 24), name
    grey = np.asarray(open_image(corpus["grey16.png"]), dtype=np.int16)
    assert np.abs(grey - np.asarray(open_image(corpus["grey.png"]), dtype=np.int16)).max() <= 1  # 16 -> 8 bit
    assert np.abs(np.asarray(open_image(corpus["cmyk.jpg"]), dtype=np.int16) - reference).mean() < 12
    rotated = open_image(corpus["rotated.jpg"])
    assert rotated.size == (24, 40)  # EXIF orientation 6 applied: portrait, as a viewer shows it
    raw = open_image(corpus["rotated.jpg"], exif=False)
    assert raw.size == (40, 24)
    assert np.abs(np.asarray(rotated, dtype=np.int16) - np.rot90(np.asarray(raw), -1)).mean() < 1
    assert open_image(corpus["tiny.png"]).size == (3, 5)
    assert open_image(corpus["grey.png"], mode=None).mode == "L"


@pytest.mark.parametrize("name,needle", [("truncated.png", "truncated or corrupt"),
                                         ("truncated.jpg", "truncated or corrupt"),
                                         ("text.png", "not a readable image"), ("empty.png", "empty file"),
                                         ("bomb.png", "10000000000 pixels|10,000,000,000 pixels")])
def test_bad_files_give_one_message_naming_the_file(corpus: dict[str, Path], name: str, needle: str) -> None:
    assert name in BAD_IMAGES
    with pytest.raises(ImageReadError, match=needle) as info:
        open_image(corpus[name])
    message = str(info.value)
    assert message.startswith(str(corpus[name])) and "\n" not in message


def test_the_pixel_limit_is_an_option(corpus: dict[str, Path]) -> None:
    with pytest.raises(ImageReadError, match="more than the limit of 100"):
        open_image(corpus["rgb.png"], max_pixels=100)
    assert image_size(corpus["bomb.png"], max_pixels=None) == (100_000, 100_000)  # header only, nothing decoded
    with pytest.raises(ImageReadError, match="not found"):
        open_image(corpus["rgb.png"].with_name("missing.png"))

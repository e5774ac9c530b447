"""``ffnet_sr.bench.compare_with_authors`` (the super_resolution rows of docs/speed.md) on a tiny image: the
summary it hands to scripts/speed_table.py keeps the contract, its ratio is the medians' ratio, ours equals the
authors' formulation, and the tiled-memory note separates the output image from the working memory. No time is
asserted."""

from __future__ import annotations

import pytest

from ffnet_sr.bench import _output_mib, compare_with_authors
from metamixer.bench import check_entry


def test_output_mib_is_the_float32_rgb_output() -> None:
    assert _output_mib("90x160", 4) == pytest.approx(3 * 360 * 640 * 4 / 2**20)
    assert _output_mib("180x320", 2) == pytest.approx(3 * 360 * 640 * 4 / 2**20)


def test_compare_with_authors_on_a_tiny_image() -> None:
    logged: list[str] = []
    result = compare_with_authors(lr_hw=(12, 20), rounds=2, tile=8, tile_pad=4, log=logged.append)
    assert result["max_rel_diff"] < 1e-4
    assert result["ratio"] == pytest.approx(result["median_s"]["authors"] / result["median_s"]["ours"])
    [row] = result["speed_summary"]
    check_entry(row, "row")
    assert row["what"].startswith("ffnetsr_light x4, LR 12x20, fp32, batch 1")
    assert row["ours"]["value"] == result["median_s"]["ours"] and row["higher_is_better"] is False
    assert set(result["tiled_peak_mem_mib"]) == {"tile", "tile_pad", "12x20", "24x40"}
    assert len(logged) == 2 and all(line.startswith("round: authors ") for line in logged)
    tiled_note = next(n for n in result["notes"] if n.startswith("tiled deploy path"))
    assert "24x40 -> " in tiled_note and f"(output {_output_mib('24x40', 4):.1f})" in tiled_note

"""Serialization codes against brute-force definitions on small grids."""

from __future__ import annotations

import itertools

import pytest
import torch

from ffnet_pointcloud.serialization import (
    ORDERS,
    encode,
    hilbert_decode,
    hilbert_encode,
    z_order_decode,
    z_order_encode,
)
from ffnet_pointcloud.structure import Point
from metamixer.train.errors import FFNetError


def _full_grid(depth: int) -> torch.Tensor:
    n = 1 << depth
    return torch.tensor(list(itertools.product(range(n), repeat=3)), dtype=torch.long)


def _morton_brute(x: int, y: int, z: int, depth: int) -> int:
    """Definition: read the bits from the top level down, emitting (x_i, y_i, z_i) at each level."""
    bits = ""
    for i in reversed(range(depth)):
        bits += f"{(x >> i) & 1}{(y >> i) & 1}{(z >> i) & 1}"
    return int(bits, 2)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_z_order_matches_bit_interleaving_definition(depth: int) -> None:
    grid = _full_grid(depth)
    code = z_order_encode(grid, depth)
    expected = torch.tensor([_morton_brute(*map(int, g), depth) for g in grid])
    assert torch.equal(code, expected)
    assert torch.equal(z_order_decode(code, depth), grid)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_hilbert_is_a_continuous_octree_nested_bijection(depth: int) -> None:
    """A 3-D Hilbert curve visits every cell once (bijection onto 0..8^d-1), consecutive cells are face
    neighbours (continuity — z-order violates this), and every aligned 2^k cube is one contiguous code range."""
    grid = _full_grid(depth)
    code = hilbert_encode(grid, depth)
    assert torch.equal(torch.sort(code).values, torch.arange(8**depth))
    path = grid[torch.argsort(code)]
    steps = (path[1:] - path[:-1]).abs().sum(1)
    assert torch.all(steps == 1)
    for k in range(1, depth + 1):
        cube = grid >> k
        cube_id = (cube[:, 0] << 20) | (cube[:, 1] << 10) | cube[:, 2]
        # all cells of one cube share code >> 3k, and different cubes differ
        assert len(torch.unique(torch.stack([cube_id, code >> (3 * k)], 1), dim=0)) == len(
            torch.unique(cube_id)
        )
        assert len(torch.unique(code >> (3 * k))) == len(torch.unique(cube_id))
    assert torch.equal(hilbert_decode(code, depth), grid)
    # the curve starts at the origin and, being continuous, z-order is not one
    assert code[0] == 0
    zpath = grid[torch.argsort(z_order_encode(grid, depth))]
    if depth > 1:
        assert (zpath[1:] - zpath[:-1]).abs().sum(1).max() > 1


def test_hilbert_depth2_known_start() -> None:
    """First cells of the 2-level curve: a Hilbert curve's first 8 cells fill the first octant, each step 1."""
    grid = _full_grid(2)
    path = grid[torch.argsort(hilbert_encode(grid, 2))]
    assert torch.all((path[:8] >> 1) == path[0] >> 1)
    assert torch.all((path[8:16] >> 1) == path[8] >> 1)


def test_trans_variants_swap_x_and_y_and_batch_goes_on_top() -> None:
    g = torch.randint(0, 16, (200, 3))
    batch = torch.randint(0, 3, (200,))
    for base in ("z", "hilbert"):
        assert torch.equal(encode(g, None, f"{base}-trans", 4), encode(g[:, [1, 0, 2]], None, base, 4))
    code = encode(g, batch, "hilbert", 4)
    assert torch.equal(code >> 12, batch)
    assert torch.equal(code & ((1 << 12) - 1), encode(g, None, "hilbert", 4))


def test_every_order_nests_parent_cells_which_pooling_relies_on() -> None:
    g = torch.randint(0, 32, (500, 3))
    batch = torch.randint(0, 2, (500,))
    parent = torch.cat([batch[:, None], g >> 1], 1)
    n_parents = len(torch.unique(parent, dim=0))
    for order in ORDERS:
        shifted = encode(g, batch, order, 5) >> 3
        assert len(torch.unique(shifted)) == n_parents
        assert len(torch.unique(torch.cat([parent, shifted[:, None]], 1), dim=0)) == n_parents


def test_point_serialization_orders_and_inverse() -> None:
    g = torch.randint(0, 20, (300, 3))
    g = torch.unique(g, dim=0)
    p = Point(grid_coord=g, feat=torch.zeros(len(g), 1), offset=torch.tensor([100, len(g)]))
    p.serialization(ORDERS, shuffle_orders=False)
    assert p.serialized_code.shape == (4, len(g))
    for k in range(4):
        ordered = p.serialized_code[k][p.serialized_order[k]]
        assert torch.all(ordered[1:] > ordered[:-1])
        assert torch.equal(p.serialized_order[k][p.serialized_inverse[k]], torch.arange(len(g)))
    # scene 0 (first 100 points) comes entirely before scene 1 in every order
    assert torch.all(p.serialized_inverse[:, :100].max(1).values < 100)


def test_bad_serialization_inputs() -> None:
    with pytest.raises(FFNetError, match="unknown serialization order"):
        encode(torch.zeros(2, 3, dtype=torch.long), order="peano")
    with pytest.raises(FFNetError, match=r"\[0, 4\)"):
        z_order_encode(torch.tensor([[4, 0, 0]]), depth=2)
    with pytest.raises(FFNetError, match=r"\[N, 3\]"):
        hilbert_encode(torch.zeros(3, 2, dtype=torch.long), depth=2)

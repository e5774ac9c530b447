"""Space-filling-curve codes for voxel grids: z-order (Morton) and Hilbert, plus their xy-transposed variants.

The sparse FFNet only uses serialization for pooling: a code shifted right by 3 bits identifies the parent cell
of a 2x2x2 merge, for every order, because both curves are octree-nested (all voxels of an aligned 2^k cube have
consecutive codes). The codes are also the order in which a serialized-attention model would walk the points, so
they are exact (collision-free) integers, not hashes.

Bit layout at every level i (from the least significant): ``x_i << 2 | y_i << 1 | z_i`` for z-order; the Hilbert
code is Skilling's transpose algorithm ("Programming the Hilbert curve", 2004) read out in the same layout.
The ``-trans`` variants encode (y, x, z) instead of (x, y, z). With a batch index the final key is
``batch << (3 * depth) | code`` so points of different scenes never interleave.
"""

from __future__ import annotations

import torch

from metamixer.train.errors import FFNetError

__all__ = [
    "ORDERS",
    "MAX_DEPTH",
    "z_order_encode",
    "z_order_decode",
    "hilbert_encode",
    "hilbert_decode",
    "encode",
    "grid_depth",
]

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
#: 16 bits per axis (65,536 voxels = 1.3 km at 2 cm) keeps 48-bit codes plus room for the batch index in int64.
MAX_DEPTH = 16


def _check_grid(grid: torch.Tensor, depth: int) -> torch.Tensor:
    if grid.dim() != 2 or grid.shape[1] != 3:
        raise FFNetError(f"serialization expects integer grid coordinates [N, 3], got {tuple(grid.shape)}")
    if not 0 < depth <= MAX_DEPTH:
        raise FFNetError(f"serialization depth must be in 1..{MAX_DEPTH}, got {depth}")
    grid = grid.long()
    if grid.numel() and (int(grid.min()) < 0 or int(grid.max()) >= (1 << depth)):
        raise FFNetError(
            f"grid coordinates must lie in [0, {1 << depth}) for depth {depth}; got range "
            f"[{int(grid.min())}, {int(grid.max())}] (shift coordinates to start at 0, or use a larger depth)"
        )
    return grid


def grid_depth(grid: torch.Tensor) -> int:
    """Smallest depth whose cube holds every coordinate (at least 1)."""
    if grid.numel() == 0:
        return 1
    return max(1, int(grid.max()).bit_length())


def _interleave(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, depth: int) -> torch.Tensor:
    code = torch.zeros_like(x)
    for i in range(depth):
        code |= (
            (((x >> i) & 1) << (3 * i + 2)) | (((y >> i) & 1) << (3 * i + 1)) | (((z >> i) & 1) << (3 * i))
        )
    return code


def _deinterleave(code: torch.Tensor, depth: int) -> torch.Tensor:
    x = torch.zeros_like(code)
    y = torch.zeros_like(code)
    z = torch.zeros_like(code)
    for i in range(depth):
        x |= ((code >> (3 * i + 2)) & 1) << i
        y |= ((code >> (3 * i + 1)) & 1) << i
        z |= ((code >> (3 * i)) & 1) << i
    return torch.stack([x, y, z], 1)


def z_order_encode(grid: torch.Tensor, depth: int = MAX_DEPTH) -> torch.Tensor:
    """Morton code of ``grid [N, 3]`` (int64)."""
    g = _check_grid(grid, depth)
    return _interleave(g[:, 0], g[:, 1], g[:, 2], depth)


def z_order_decode(code: torch.Tensor, depth: int = MAX_DEPTH) -> torch.Tensor:
    return _deinterleave(code.long(), depth)


def hilbert_encode(grid: torch.Tensor, depth: int = MAX_DEPTH) -> torch.Tensor:
    """Hilbert code of ``grid [N, 3]`` (int64), vectorized Skilling axes-to-transpose."""
    g = _check_grid(grid, depth)
    x = [g[:, 0].clone(), g[:, 1].clone(), g[:, 2].clone()]
    # inverse undo of the excess work (Skilling): walk the bits from the top
    q = 1 << (depth - 1)
    while q > 1:
        p = q - 1
        for i in range(3):
            bit = (x[i] & q) != 0
            # if bit set: invert low bits of x[0]; else swap low bits of x[0] and x[i]
            x0_inverted = x[0] ^ p
            t = (x[0] ^ x[i]) & p
            new_x0 = torch.where(bit, x0_inverted, x[0] ^ t)
            new_xi = torch.where(bit, x[i], x[i] ^ t)
            if i == 0:
                x[0] = new_x0
            else:
                x[0], x[i] = new_x0, new_xi
        q >>= 1
    # Gray encode
    x[1] = x[1] ^ x[0]
    x[2] = x[2] ^ x[1]
    t = torch.zeros_like(x[0])
    q = 1 << (depth - 1)
    while q > 1:
        t = torch.where((x[2] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    x = [v ^ t for v in x]
    return _interleave(x[0], x[1], x[2], depth)


def hilbert_decode(code: torch.Tensor, depth: int = MAX_DEPTH) -> torch.Tensor:
    """Inverse of :func:`hilbert_encode` (Skilling transpose-to-axes)."""
    t3 = _deinterleave(code.long(), depth)
    x = [t3[:, 0].clone(), t3[:, 1].clone(), t3[:, 2].clone()]
    n = 2 << (depth - 1)
    # Gray decode
    t = x[2] >> 1
    x[2] = x[2] ^ x[1]
    x[1] = x[1] ^ x[0]
    x[0] = x[0] ^ t
    # undo excess work
    q = 2
    while q != n:
        p = q - 1
        for i in (2, 1, 0):
            bit = (x[i] & q) != 0
            x0_inverted = x[0] ^ p
            tt = (x[0] ^ x[i]) & p
            new_x0 = torch.where(bit, x0_inverted, x[0] ^ tt)
            new_xi = torch.where(bit, x[i], x[i] ^ tt)
            if i == 0:
                x[0] = new_x0
            else:
                x[0], x[i] = new_x0, new_xi
        q <<= 1
    return torch.stack(x, 1)


def encode(
    grid: torch.Tensor, batch: torch.Tensor | None = None, order: str = "z", depth: int | None = None
) -> torch.Tensor:
    """Serialization key of each voxel for one of :data:`ORDERS`, with the batch index in the top bits."""
    if order not in ORDERS:
        raise FFNetError(f"unknown serialization order {order!r}; expected one of {', '.join(ORDERS)}")
    depth = grid_depth(grid) if depth is None else depth
    g = grid.long()
    if order.endswith("-trans"):
        g = g[:, [1, 0, 2]]
    code = z_order_encode(g, depth) if order.startswith("z") else hilbert_encode(g, depth)
    if batch is not None:
        code = code | (batch.long() << (3 * depth))
    return code

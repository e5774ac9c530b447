"""PLY point clouds and meshes through the maintained ``plyfile`` library (ascii and binary, either endianness).

Why a thin wrapper and not ``plyfile`` everywhere: the rest of the app wants plain ``{element: {property: array}}``
dicts in native byte order with triangle lists as ``[F, 3]`` arrays, and every bad file must end as one
:class:`FFNetError` line naming the file (not a ``PlyParseError`` traceback).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyElementParseError, PlyHeaderParseError

from metamixer.train.errors import FFNetError

__all__ = ["read_ply", "write_ply"]

_EXPECTED_HEADER = (
    "expected 'ply', 'format ascii|binary_little_endian|binary_big_endian 1.0', 'element'/'property' lines "
    "and 'end_header'"
)
# ScanNet-style triangle meshes: telling plyfile the list length lets it memory-map the face block in one go
# instead of reading it row by row in Python; a mesh with other polygons falls back to the row-wise read.
_TRIANGLES = {"face": {"vertex_indices": 3, "vertex_index": 3}}
# dtypes PLY can store as they are; anything else is written as float32 (floats) or int32 (ints, bools)
_PLY_CODES = {"i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"}


def _load(path: Path) -> PlyData:
    try:
        with warnings.catch_warnings():
            # a truncated ascii list makes numpy warn before plyfile raises; the FFNetError below says it all
            warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
            try:
                return PlyData.read(str(path), known_list_len=_TRIANGLES)
            except PlyElementParseError as e:
                if e.message != "unexpected list length":
                    raise
                return PlyData.read(str(path))  # not all triangles: the row-wise read takes any list lengths
    except UnicodeDecodeError:
        raise FFNetError(
            f"{path}: not a PLY file (binary bytes where its text header belongs); {_EXPECTED_HEADER}"
        ) from None
    except PlyHeaderParseError as e:
        raise FFNetError(f"{path}: not a valid PLY header ({e}); {_EXPECTED_HEADER}") from None
    except PlyElementParseError as e:
        raise FFNetError(
            f"{path}: truncated or malformed PLY data ({e}); expected the element counts its header declares"
        ) from None
    except OSError as e:
        raise FFNetError(f"{path}: cannot read PLY file ({e.strerror or e})") from None


def _column(values: np.ndarray) -> np.ndarray:
    """Copy one property out of plyfile's (possibly memory-mapped, possibly big-endian) record array."""
    if values.dtype != object:
        return np.array(values, dtype=values.dtype.newbyteorder("="))
    rows = [np.asarray(r) for r in values]  # a list property read row-wise: one array per element
    if not rows:
        return np.empty((0, 0), dtype=np.int32)
    if len({len(r) for r in rows}) == 1:
        stacked = np.stack(rows)
        return stacked.astype(stacked.dtype.newbyteorder("="))
    out = np.empty(len(rows), dtype=object)  # varying lengths (mixed polygons): keep one array per row
    out[:] = [r.astype(r.dtype.newbyteorder("=")) for r in rows]
    return out


def read_ply(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Return ``{element: {property: array}}`` in native byte order.

    List properties (``face.vertex_indices``) become ``[count, k]`` arrays when every list has the same length k,
    else a 1-D object array of per-row arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FFNetError(f"PLY file not found: {path}")
    if path.stat().st_size == 0:
        raise FFNetError(f"{path}: empty file (0 bytes); expected a PLY file ('ply' header, then the data)")
    ply = _load(path)
    return {el.name: {p.name: _column(el.data[p.name]) for p in el.properties} for el in ply.elements}


def write_ply(path: str | Path, coord: np.ndarray, **props: np.ndarray) -> Path:
    """Write a binary little-endian PLY point cloud: ``x y z`` (float32) plus per-point properties.

    Properties keep their dtype when PLY can store it (``red/green/blue`` uint8, ``label`` int32, ...); others
    become float32 or int32, so viewers that only know the PLY scalar types can open the file.
    """
    path = Path(path)
    coord = np.asarray(coord)
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise FFNetError(f"write_ply {path}: coord must be [N, 3], got shape {tuple(coord.shape)}")
    n = len(coord)
    columns = {"x": coord[:, 0], "y": coord[:, 1], "z": coord[:, 2]}
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    for k, v in props.items():
        if k in columns:
            raise FFNetError(f"write_ply {path}: property {k!r} clashes with the x/y/z coordinates")
        v = np.asarray(v)
        if v.shape != (n,):
            raise FFNetError(f"write_ply {path}: property {k!r} has shape {tuple(v.shape)}, expected ({n},)")
        code = v.dtype.str[1:]
        if code not in _PLY_CODES:
            code = "f4" if v.dtype.kind == "f" else "i4"
        columns[k] = v
        fields.append((k, "<" + code))
    data = np.empty(n, dtype=np.dtype(fields))
    for k, v in columns.items():
        data[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    ply = PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<")
    # written aside and renamed: an interrupted run never leaves a truncated PLY under the final name
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a prediction file is for everyone who may read it
        with os.fdopen(fd, "wb") as f:
            ply.write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

"""Minimal PLY reader/writer (ascii and binary little/big endian), enough for ScanNet meshes and viewers.

Reads every element (``vertex``, ``face`` with list properties) into numpy; writes point clouds with any float /
uint8 / int per-vertex properties (e.g. x y z red green blue label) in binary little endian.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metamixer.train.errors import FFNetError

__all__ = ["read_ply", "write_ply"]

_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def _parse_header(f, path: Path):
    if f.readline().strip() != b"ply":
        raise FFNetError(f"{path}: not a PLY file (missing 'ply' magic)")
    fmt, elements = None, []
    while True:
        line = f.readline()
        if not line:
            raise FFNetError(f"{path}: truncated PLY header (no end_header)")
        words = line.decode("ascii", "replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise FFNetError(f"{path}: PLY property before any element")
            if words[1] == "list":
                elements[-1][2].append((words[4], ("list", _TYPES[words[2]], _TYPES[words[3]])))
            else:
                if words[1] not in _TYPES:
                    raise FFNetError(f"{path}: unknown PLY property type {words[1]!r}")
                elements[-1][2].append((words[2], _TYPES[words[1]]))
        elif words[0] == "end_header":
            break
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise FFNetError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements


def read_ply(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Return ``{element: {property: array}}``; list properties become ``[count, k]`` arrays (k constant)."""
    path = Path(path)
    if not path.is_file():
        raise FFNetError(f"PLY file not found: {path}")
    out: dict[str, dict[str, np.ndarray]] = {}
    with open(path, "rb") as f:
        fmt, elements = _parse_header(f, path)
        if fmt == "ascii":
            tokens = f.read().split()
            pos = 0
            for name, count, props in elements:
                cols: dict[str, list] = {p: [] for p, _ in props}
                for _ in range(count):
                    for p, t in props:
                        if isinstance(t, tuple):
                            k = int(tokens[pos])
                            cols[p].append([float(x) for x in tokens[pos + 1 : pos + 1 + k]])
                            pos += 1 + k
                        else:
                            cols[p].append(float(tokens[pos]))
                            pos += 1
                out[name] = {
                    p: np.asarray(cols[p], dtype=(t[2] if isinstance(t, tuple) else t)) for p, t in props
                }
            return out
        endian = "<" if fmt == "binary_little_endian" else ">"
        for name, count, props in elements:
            if all(not isinstance(t, tuple) for _, t in props):
                dtype = np.dtype([(p, endian + t) for p, t in props])
                data = np.frombuffer(f.read(dtype.itemsize * count), dtype=dtype, count=count)
                out[name] = {p: data[p].astype(data[p].dtype.newbyteorder("=")) for p, _ in props}
                continue
            # list properties (faces): assume a constant list length (triangles), checked per row
            cols = {p: [] for p, _ in props}
            for _ in range(count):
                for p, t in props:
                    if isinstance(t, tuple):
                        k = int(np.frombuffer(f.read(np.dtype(t[1]).itemsize), endian + t[1])[0])
                        item = np.dtype(endian + t[2])
                        cols[p].append(np.frombuffer(f.read(item.itemsize * k), item))
                    else:
                        item = np.dtype(endian + t)
                        cols[p].append(np.frombuffer(f.read(item.itemsize), item)[0])
            out[name] = {p: np.asarray(v) for p, v in cols.items()}
    return out


def write_ply(path: str | Path, coord: np.ndarray, **props: np.ndarray) -> Path:
    """Write a binary PLY point cloud: ``x y z`` plus per-point properties (``red/green/blue`` uint8, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(coord)
    columns = {"x": coord[:, 0], "y": coord[:, 1], "z": coord[:, 2], **props}
    names = {
        "i1": "char",
        "u1": "uchar",
        "i2": "short",
        "u2": "ushort",
        "i4": "int",
        "u4": "uint",
        "f4": "float",
        "f8": "double",
    }
    fields, header = [], ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    for k, v in columns.items():
        v = np.asarray(v)
        if len(v) != n:
            raise FFNetError(f"write_ply: property {k!r} has {len(v)} rows, expected {n}")
        code = v.dtype.str[1:] if k not in ("x", "y", "z") else "f4"
        if code not in names:
            code = "f4" if v.dtype.kind == "f" else "i4"
        fields.append((k, "<" + code))
        header.append(f"property {names[code]} {k}")
    header.append("end_header")
    data = np.empty(n, dtype=np.dtype(fields))
    for k, v in columns.items():
        data[k] = v
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    return path

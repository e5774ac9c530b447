"""Point-cloud transforms on dicts of numpy arrays (the official configs' pipeline, fact sheet §4.2).

Each transform is a callable ``dict -> dict`` configured from a ``{"type": Name, **kwargs}`` mapping, the same
shape as Pointcept configs, so a recipe's pipeline reads like the one users know. Per-point arrays are those
whose first dimension equals the number of points (``coord``, ``color``, ``normal``, ``segment``, ...); any
subsetting transform (GridSample, SphereCrop, RandomDropout) subsets all of them together.

``GridSample(mode="test")`` returns a LIST of fragments (one point per voxel each) whose ``index`` arrays
together cover every input point; that is what fragment inference votes over. ``SphereCrop(mode="all")`` also
returns a list (crops of at most ``point_max`` points that together hold every point). :class:`Compose` applies
the transforms after such a step to every element and returns the flat list, so a test pipeline may crop each
fragment; training and validation pipelines must give one sample per scene (:func:`check_single_output`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from metamixer.train.errors import FFNetError

__all__ = ["TRANSFORMS", "HASH_TYPES", "Compose", "build_transforms", "check_single_output", "point_keys", "subset",
           "voxelize"]

Data = dict[str, Any]
TRANSFORMS: dict[str, type] = {}

# keys that are never subset with the points even if their length happens to match
_SCENE_KEYS = {"name", "split", "grid_size", "num_points", "inverse"}


def register(cls: type) -> type:
    TRANSFORMS[cls.__name__] = cls
    return cls


def point_keys(data: Mapping[str, Any]) -> list[str]:
    """Keys holding one row per point (same length as ``coord``)."""
    n = len(data["coord"])
    keys = []
    for k, v in data.items():
        if k in _SCENE_KEYS or k == "index_valid_keys":
            continue
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n:
            keys.append(k)
    return keys


def subset(data: Data, idx: np.ndarray) -> Data:
    out = dict(data)
    for k in point_keys(data):
        out[k] = data[k][idx]
    return out


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Data], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, data: Data) -> Any:
        for i, t in enumerate(self.transforms):
            data = t(data)
            if isinstance(data, list):  # several samples (fragments, crops): the rest applies to each
                rest = Compose(self.transforms[i + 1:])
                out: list[Data] = []
                for part in data:
                    result = rest(part)
                    out.extend(result if isinstance(result, list) else [result])
                return out
        return data

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def build_transforms(
    specs: Iterable[Mapping[str, Any]] | None, rng: np.random.Generator | None = None, where: str = "transforms"
) -> Compose:
    """Build a pipeline from ``[{"type": "GridSample", "grid_size": 0.02, ...}, ...]``; ``where`` is the config
    key of the list (``data.train_transforms``), so a bad entry is reported as ``data.train_transforms[7]``."""
    if specs is not None and not isinstance(specs, (list, tuple)):
        raise FFNetError(f"{where}: expected a list of {{type: Name, ...}} entries, got {type(specs).__name__}")
    transforms = []
    for i, spec in enumerate(specs or []):
        if not isinstance(spec, Mapping):
            raise FFNetError(f"{where}[{i}]: expected a mapping {{type: Name, ...}}, got {spec!r}")
        spec = dict(spec)
        name = spec.pop("type", None)
        if name not in TRANSFORMS:
            raise FFNetError(f"{where}[{i}]: unknown type {name!r}; known: {', '.join(sorted(TRANSFORMS))}")
        try:
            t = TRANSFORMS[name](**spec)
        except (TypeError, FFNetError) as exc:
            raise FFNetError(f"{where}[{i}] ({name}): {exc}") from None
        transforms.append(t)
    pipeline = Compose(transforms)
    if rng is not None:
        set_rng(pipeline, rng)
    return pipeline


def _multi_output(t: Any) -> str | None:
    """Why transform ``t`` returns a list instead of one sample (None: it returns one sample)."""
    if isinstance(t, GridSample) and t.mode == "test":
        return "mode 'test' returns a list of fragments"
    if isinstance(t, SphereCrop) and t.mode == "all":
        return "mode 'all' returns a list of crops covering the scene"
    return None


def check_single_output(pipeline: Compose, where: str, hint: str = "it belongs in data.test_post_transforms") -> None:
    """Refuse a transform that turns one scene into several samples where one sample is expected (training and
    validation batches, TTA views): the next step would get a list and fail far from the config key."""
    for i, t in enumerate(pipeline.transforms):
        reason = _multi_output(t)
        if reason is not None:
            raise FFNetError(f"{where}[{i}] ({type(t).__name__}): {reason}, but this pipeline must give one sample "
                             f"per scene; {hint}")


def set_rng(pipeline: Compose, rng: np.random.Generator) -> None:
    """Give every random transform the same generator (seeded per worker) for reproducible epochs."""
    for t in pipeline.transforms:
        t.rng = rng


class _Random:
    rng: np.random.Generator = np.random.default_rng()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k != "rng")
        return f"{type(self).__name__}({fields})"


@register
class CenterShift(_Random):
    """Move the bounding-box centre to the origin (z: to the floor when ``apply_z`` is False)."""

    def __init__(self, apply_z: bool = True) -> None:
        self.apply_z = apply_z

    def __call__(self, data: Data) -> Data:
        c = data["coord"]
        lo, hi = c.min(0), c.max(0)
        shift = (lo + hi) / 2
        if not self.apply_z:
            shift[2] = lo[2]
        data["coord"] = (c - shift).astype(c.dtype)
        return data


@register
class RandomDropout(_Random):
    """With probability ``dropout_application_ratio`` drop a ``dropout_ratio`` fraction of the points."""

    def __init__(self, dropout_ratio: float = 0.2, dropout_application_ratio: float = 0.2) -> None:
        self.dropout_ratio = dropout_ratio
        self.dropout_application_ratio = dropout_application_ratio

    def __call__(self, data: Data) -> Data:
        if self.rng.random() < self.dropout_application_ratio:
            n = len(data["coord"])
            keep = self.rng.choice(n, int(n * (1 - self.dropout_ratio)), replace=False)
            data = subset(data, np.sort(keep))
        return data


def _rotation(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    raise FFNetError(f"rotation axis must be x, y or z, got {axis!r}")


@register
class RandomRotate(_Random):
    """Rotate about ``axis`` by an angle uniform in ``angle`` (in units of pi) with probability ``p``.

    Normals rotate with the points. ``center`` is the pivot (default: bounding-box centre).
    """

    def __init__(
        self,
        angle: Sequence[float] = (-1, 1),
        axis: str = "z",
        center: Sequence[float] | None = None,
        always_apply: bool = False,
        p: float = 0.5,
    ) -> None:
        self.angle = tuple(angle)
        self.axis = axis
        self.center = center
        self.always_apply = always_apply
        self.p = p

    def draw_angle(self) -> float:
        """Rotation angle in radians for this call."""
        return self.rng.uniform(*self.angle) * np.pi

    def __call__(self, data: Data) -> Data:
        if not self.always_apply and self.rng.random() > self.p:
            return data
        return rotate(data, self.axis, self.draw_angle(), self.center)


def rotate(data: Data, axis: str, angle: float, center: Sequence[float] | None = None) -> Data:
    rot = _rotation(axis, angle)
    c = data["coord"]
    pivot = (c.min(0) + c.max(0)) / 2 if center is None else np.asarray(center)
    data["coord"] = ((c - pivot) @ rot.T + pivot).astype(c.dtype)
    if "normal" in data:
        data["normal"] = (data["normal"] @ rot.T).astype(data["normal"].dtype)
    return data


@register
class RandomRotateTargetAngle(RandomRotate):
    """Rotate by one of ``angle`` (units of pi) — the TTA views use a single fixed angle each."""

    def __init__(
        self,
        angle: Sequence[float] = (0.5, 1, 1.5),
        axis: str = "z",
        center: Sequence[float] | None = None,
        always_apply: bool = True,
        p: float = 1.0,
    ) -> None:
        super().__init__(angle, axis, center, always_apply, p)

    def draw_angle(self) -> float:
        return float(self.rng.choice(self.angle)) * np.pi


@register
class PointClip(_Random):
    """Clamp coordinates into ``point_cloud_range`` = (x_min, y_min, z_min, x_max, y_max, z_max), metres.

    Outdoor recipes (SemanticKITTI): a lidar scan reaches ~80 m, but the far points are few and sparse; clamping
    (not dropping) bounds the voxel grid while every original point keeps a row, so test-time votes still reach
    all of them."""

    def __init__(self, point_cloud_range: Sequence[float] = (-80, -80, -3, 80, 80, 1)) -> None:
        box = [float(v) for v in point_cloud_range]
        if len(box) != 6 or not all(np.isfinite(box)) or any(box[i] >= box[i + 3] for i in range(3)):
            raise FFNetError(f"point_cloud_range must be [x_min, y_min, z_min, x_max, y_max, z_max] with each "
                             f"min < max, got {list(point_cloud_range)}")
        self.point_cloud_range = box

    def __call__(self, data: Data) -> Data:
        lo, hi = np.array(self.point_cloud_range[:3]), np.array(self.point_cloud_range[3:])
        data["coord"] = np.clip(data["coord"], lo, hi).astype(data["coord"].dtype)
        return data


@register
class RandomScale(_Random):
    def __init__(self, scale: Sequence[float] = (0.9, 1.1), anisotropic: bool = False) -> None:
        self.scale = tuple(scale)
        self.anisotropic = anisotropic

    def __call__(self, data: Data) -> Data:
        s = self.rng.uniform(*self.scale, 3 if self.anisotropic else 1)
        data["coord"] = (data["coord"] * s).astype(data["coord"].dtype)
        return data


@register
class RandomFlip(_Random):
    """Mirror x and y independently with probability ``p`` each (normals follow)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, data: Data) -> Data:
        for axis in (0, 1):
            if self.rng.random() < self.p:
                data["coord"] = data["coord"].copy()
                data["coord"][:, axis] = -data["coord"][:, axis]
                if "normal" in data:
                    data["normal"] = data["normal"].copy()
                    data["normal"][:, axis] = -data["normal"][:, axis]
        return data


@register
class RandomJitter(_Random):
    def __init__(self, sigma: float = 0.01, clip: float = 0.05) -> None:
        if clip <= 0:
            raise FFNetError("RandomJitter.clip must be > 0")
        self.sigma = sigma
        self.clip = clip

    def __call__(self, data: Data) -> Data:
        noise = np.clip(self.sigma * self.rng.standard_normal(data["coord"].shape), -self.clip, self.clip)
        data["coord"] = (data["coord"] + noise).astype(data["coord"].dtype)
        return data


@register
class ElasticDistortion(_Random):
    """Smooth random displacement field (granularity, magnitude) pairs, as in the MinkowskiEngine recipe."""

    def __init__(
        self, distortion_params: Sequence[Sequence[float]] = ((0.2, 0.4), (0.8, 1.6)), p: float = 0.95
    ) -> None:
        self.distortion_params = [tuple(x) for x in distortion_params]
        self.p = p

    def _distort(self, coords: np.ndarray, granularity: float, magnitude: float) -> np.ndarray:
        from scipy.interpolate import RegularGridInterpolator
        from scipy.ndimage import gaussian_filter

        lo = coords.min(0)
        dims = ((coords - lo).max(0) // granularity).astype(int) + 3
        noise = self.rng.standard_normal((*dims, 3)).astype(np.float32)
        for _ in range(2):  # blur the noise so that the field is smooth
            noise = gaussian_filter(noise, sigma=(1, 1, 1, 0), mode="nearest")
        axes = [np.linspace(d_lo - granularity, d_lo + granularity * (d - 2), d) for d_lo, d in zip(lo, dims)]
        interp = RegularGridInterpolator(axes, noise, bounds_error=False, fill_value=0)
        return coords + interp(coords) * magnitude

    def __call__(self, data: Data) -> Data:
        if self.rng.random() < self.p:
            c = data["coord"].astype(np.float64)
            for granularity, magnitude in self.distortion_params:
                c = self._distort(c, granularity, magnitude)
            data["coord"] = c.astype(data["coord"].dtype)
        return data


@register
class ChromaticAutoContrast(_Random):
    def __init__(self, p: float = 0.2, blend_factor: float | None = None) -> None:
        self.p = p
        self.blend_factor = blend_factor

    def __call__(self, data: Data) -> Data:
        if "color" in data and self.rng.random() < self.p:
            color = data["color"].astype(np.float64)
            lo, hi = color.min(0, keepdims=True), color.max(0, keepdims=True)
            scale = 255.0 / np.maximum(hi - lo, 1e-6)
            contrasted = (color - lo) * scale
            blend = self.rng.random() if self.blend_factor is None else self.blend_factor
            data["color"] = ((1 - blend) * color + blend * contrasted).astype(data["color"].dtype)
        return data


@register
class ChromaticTranslation(_Random):
    def __init__(self, p: float = 0.95, ratio: float = 0.05) -> None:
        self.p = p
        self.ratio = ratio

    def __call__(self, data: Data) -> Data:
        if "color" in data and self.rng.random() < self.p:
            tr = (self.rng.random((1, 3)) - 0.5) * 255 * 2 * self.ratio
            data["color"] = np.clip(data["color"] + tr, 0, 255).astype(data["color"].dtype)
        return data


@register
class ChromaticJitter(_Random):
    def __init__(self, p: float = 0.95, std: float = 0.005) -> None:
        self.p = p
        self.std = std

    def __call__(self, data: Data) -> Data:
        if "color" in data and self.rng.random() < self.p:
            noise = self.rng.standard_normal(data["color"].shape) * self.std * 255
            data["color"] = np.clip(data["color"] + noise, 0, 255).astype(data["color"].dtype)
        return data


@register
class NormalizeColor(_Random):
    """0..255 -> [-1, 1] (Pointcept's convention: color / 127.5 - 1)."""

    def __call__(self, data: Data) -> Data:
        if "color" in data:
            data["color"] = (data["color"] / 127.5 - 1).astype(np.float32)
        return data


#: GridSample's voxel keys: Pointcept's two hashes. Both group the points into the same voxels (``ravel`` is exact,
#: ``fnv`` is checked for collisions); only the key values, and so the order of the voxels, differ.
HASH_TYPES = ("ravel", "fnv")

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


def _ravel_key(grid: np.ndarray, grid_size: float) -> np.ndarray:
    """Row-major linear index of each voxel in the scene's bounding grid: exact, so keys never collide."""
    dims = grid.max(0) + 1
    if float(np.prod(dims.astype(np.float64))) >= 2**62:
        raise FFNetError(f"scene spans {dims.tolist()} voxels at grid {grid_size}: too large for ravel keys "
                         "(use hash_type: fnv)")
    return (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]


def _fnv_key(grid: np.ndarray) -> np.ndarray:
    """64-bit FNV over the three voxel indices (multiply by the prime, then xor, per coordinate: the order
    Pointcept's ``fnv_hash_vec`` uses), wrapping modulo 2**64."""
    cells = grid.astype(np.uint64)
    key = np.full(len(cells), _FNV_OFFSET, dtype=np.uint64)
    for j in range(cells.shape[1]):
        key = np.bitwise_xor(key * _FNV_PRIME, cells[:, j])
    return key


def voxelize(coord: np.ndarray, grid_size: float,
             hash_type: str = "ravel") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Voxel indices of each point: ``(grid_coord, idx_sort, inverse_sorted, count)``.

    ``idx_sort`` sorts points by voxel key (stably: within a voxel the input order is kept), ``count`` is points
    per voxel in that order. ``hash_type`` (:data:`HASH_TYPES`) picks the key; an ``fnv`` collision (two voxels,
    one key: never seen, but possible in principle) is an error instead of a silent merge of two voxels.
    """
    grid = np.floor(coord / grid_size).astype(np.int64)
    grid -= grid.min(0)
    if hash_type == "ravel":
        key = _ravel_key(grid, grid_size)
    elif hash_type == "fnv":
        key = _fnv_key(grid)
    else:
        raise FFNetError(f"hash_type must be one of {', '.join(HASH_TYPES)}, got {hash_type!r}")
    idx_sort = np.argsort(key, kind="stable")
    _, inverse, count = np.unique(key[idx_sort], return_inverse=True, return_counts=True)
    if hash_type == "fnv":
        cells = grid[idx_sort]
        first = np.concatenate([[0], np.cumsum(count)[:-1]])
        if (cells != cells[first][inverse]).any():
            raise FFNetError(f"hash_type fnv: two voxels share one key at grid {grid_size}; use hash_type: ravel")
    return grid, idx_sort, inverse, count


@register
class GridSample(_Random):
    """Voxelize at ``grid_size`` (voxel keys: ``hash_type`` ravel | fnv, the same voxels either way).

    * ``mode="train"``: keep one random point per voxel; adds ``grid_coord`` and (``return_inverse``) an
      ``inverse`` map from every input point to its kept representative.
    * ``mode="test"``: return a list of fragments; fragment i keeps the (i mod count)-th point of each voxel, so
      the fragments together contain every point. Each fragment has ``grid_coord`` and ``index`` (its rows in
      the input).
    """

    def __init__(
        self,
        grid_size: float = 0.02,
        mode: str = "train",
        return_inverse: bool = False,
        return_grid_coord: bool = True,
        hash_type: str = "ravel",
        keys: Sequence[str] | None = None,
    ) -> None:
        if mode not in ("train", "test"):
            raise FFNetError(f"GridSample.mode must be 'train' or 'test', got {mode!r}")
        if hash_type not in HASH_TYPES:
            raise FFNetError(f"hash_type must be one of {', '.join(HASH_TYPES)} (Pointcept's voxel hashes; both "
                             f"give the same voxels), got {hash_type!r}")
        if isinstance(grid_size, bool) or not isinstance(grid_size, (int, float)) or not grid_size > 0 \
                or not np.isfinite(grid_size):
            raise FFNetError(f"grid_size must be a finite number > 0 (metres), got {grid_size!r}")
        self.grid_size = grid_size
        self.mode = mode
        self.return_inverse = return_inverse
        self.return_grid_coord = return_grid_coord
        self.hash_type = hash_type

    def __call__(self, data: Data) -> Data | list[Data]:
        grid, idx_sort, inverse, count = voxelize(data["coord"], self.grid_size, self.hash_type)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        if self.mode == "train":
            pick = start + self.rng.integers(0, count.max(), count.size) % count
            idx_unique = idx_sort[pick]
            out = subset(data, idx_unique)
            out["grid_coord"] = grid[idx_unique]
            if self.return_inverse:
                inv = np.zeros(len(inverse), dtype=np.int64)
                inv[idx_sort] = inverse
                out["inverse"] = inv
            return out
        fragments = []
        for i in range(int(count.max())):
            idx_part = idx_sort[start + i % count]
            frag = subset(data, idx_part)
            frag["grid_coord"] = grid[idx_part]
            frag["index"] = idx_part
            fragments.append(frag)
        return fragments


@register
class SphereCrop(_Random):
    """Keep at most ``point_max`` points (or ``sample_rate`` of them) nearest to a centre point.

    ``mode``: "random" (random centre, training), "center" (the scene's middle point), "all" (test time: a LIST
    of crops of at most ``point_max`` points each that together hold every point, as Pointcept's "all": large
    outdoor fragments are segmented piecewise and every point still gets its votes). In "all" each crop's
    ``index`` gives its rows in the input (composed with an ``index`` the input already has, e.g. a GridSample
    fragment's), and each next centre is a random point that is in no crop yet, so the crops end after at most
    one per point (Pointcept draws its centres from a coverage score instead).
    """

    def __init__(
        self, point_max: int = 80000, sample_rate: float | None = None, mode: str = "random"
    ) -> None:
        if mode not in ("random", "center", "all"):
            raise FFNetError(f"SphereCrop.mode must be 'random', 'center' or 'all', got {mode!r}")
        if isinstance(point_max, bool) or not isinstance(point_max, int) or point_max < 1:
            raise FFNetError(f"point_max must be an integer >= 1 (points per crop), got {point_max!r}")
        if sample_rate is not None and (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float))
                                        or not 0 < sample_rate <= 1):
            raise FFNetError(f"sample_rate must be null or a number in (0, 1], got {sample_rate!r}")
        self.point_max = point_max
        self.sample_rate = sample_rate
        self.mode = mode

    def _limit(self, n: int) -> int:
        point_max = int(self.sample_rate * n) if self.sample_rate is not None else self.point_max
        return max(1, min(point_max, self.point_max))

    def __call__(self, data: Data) -> Data | list[Data]:
        n = len(data["coord"])
        point_max = self._limit(n)
        if self.mode == "all":
            return self._all(data, point_max)
        if n <= point_max:
            return data
        c = data["coord"]
        centre = c[self.rng.integers(n)] if self.mode == "random" else c[n // 2]
        idx = np.argsort(((c - centre) ** 2).sum(1), kind="stable")[:point_max]
        return subset(data, np.sort(idx))

    def _all(self, data: Data, point_max: int) -> list[Data]:
        n = len(data["coord"])
        if "index" not in data:
            data = {**data, "index": np.arange(n)}
        if n <= point_max:
            return [data]
        c = data["coord"].astype(np.float64)
        covered = np.zeros(n, dtype=bool)
        crops = []
        while not covered.all():
            centre = c[self.rng.choice(np.flatnonzero(~covered))]
            idx = np.sort(np.argsort(((c - centre) ** 2).sum(1), kind="stable")[:point_max])
            covered[idx] = True
            crops.append(subset(data, idx))
        return crops


@register
class ShufflePoint(_Random):
    def __call__(self, data: Data) -> Data:
        return subset(data, self.rng.permutation(len(data["coord"])))

"""The array backend the motors are written against: numpy (default) or torch.

The motors call only the operations on `Backend`, so one implementation runs on numpy
arrays or torch tensors (CPU, or CUDA when present). Two rules keep results comparable:

* every array is float64 (int64 for indices) on both backends, so the same formula gives
  the same value up to summation order (`PARITY_RTOL` states the tolerance we test);
* every random number is drawn on the host from numpy's PCG64 generator and moved to the
  backend, so a seed means the same draws everywhere and numpy replays bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gd.motors.errors import MotorInputError

# numpy vs torch results agree to this relative tolerance (plus PARITY_ATOL absolute).
# Both run float64; differences come only from reduction order and libm, ~1e-15 per op,
# amplified by thresholds near a boundary. Tested in tests/motors/test_backend_parity.py.
PARITY_RTOL = 1e-9
PARITY_ATOL = 1e-9

BACKENDS = ("numpy", "torch")

Array = Any


class Backend:
    """numpy implementation; `TorchBackend` overrides what differs."""

    name = "numpy"

    def __init__(self) -> None:
        self.device = "cpu"

    # -- construction --------------------------------------------------------------
    def asarray(self, x: Any) -> Array:
        return np.asarray(x, dtype=np.float64)

    def asint(self, x: Any) -> Array:
        return np.asarray(x, dtype=np.int64)

    def asbool(self, x: Any) -> Array:
        return np.asarray(x, dtype=bool)

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def zeros(self, shape: tuple[int, ...]) -> Array:
        return np.zeros(shape, dtype=np.float64)

    def ones(self, shape: tuple[int, ...]) -> Array:
        return np.ones(shape, dtype=np.float64)

    def full(self, shape: tuple[int, ...], value: float) -> Array:
        return np.full(shape, value, dtype=np.float64)

    def bool_full(self, shape: tuple[int, ...], value: bool) -> Array:
        return np.full(shape, value, dtype=bool)

    def arange(self, n: int) -> Array:
        return np.arange(n, dtype=np.int64)

    def normal(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
        return self.asarray(rng.standard_normal(shape))

    def uniform(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
        return self.asarray(rng.random(shape))

    # -- elementwise ---------------------------------------------------------------
    def exp(self, x: Array) -> Array:
        return np.exp(x)

    def log(self, x: Array) -> Array:
        return np.log(x)

    def sqrt(self, x: Array) -> Array:
        return np.sqrt(x)

    def abs(self, x: Array) -> Array:
        return np.abs(x)

    def tanh(self, x: Array) -> Array:
        return np.tanh(x)

    def sigmoid(self, x: Array) -> Array:
        # tanh form: no overflow warning for large |x|, identical on both backends.
        return 0.5 * (1.0 + np.tanh(0.5 * x))

    def clip(self, x: Array, lo: float, hi: float) -> Array:
        return np.clip(x, lo, hi)

    def maximum(self, x: Array, y: Array | float) -> Array:
        return np.maximum(x, y)

    def minimum(self, x: Array, y: Array | float) -> Array:
        return np.minimum(x, y)

    def where(self, cond: Array, x: Array | float, y: Array | float) -> Array:
        return np.where(cond, x, y)

    def isfinite(self, x: Array) -> Array:
        return np.isfinite(x)

    def tofloat(self, x: Array) -> Array:
        return np.asarray(x, dtype=np.float64)

    def toint(self, x: Array) -> Array:
        return np.asarray(x, dtype=np.int64)

    # -- reductions and shape ------------------------------------------------------
    def sum(self, x: Array, axis: int | None = None) -> Array:
        return np.sum(x, axis=axis)

    def mean(self, x: Array, axis: int | None = None) -> Array:
        return np.mean(x, axis=axis)

    def max(self, x: Array, axis: int | None = None) -> Array:
        return np.max(x, axis=axis)

    def min(self, x: Array, axis: int | None = None) -> Array:
        return np.min(x, axis=axis)

    def all(self, x: Array, axis: int | None = None) -> Array:
        return np.all(x, axis=axis)

    def any(self, x: Array, axis: int | None = None) -> Array:
        return np.any(x, axis=axis)

    def argmax(self, x: Array, axis: int) -> Array:
        return np.argmax(x, axis=axis)

    def sort(self, x: Array, axis: int = -1) -> Array:
        return np.sort(x, axis=axis, kind="stable")

    def argsort(self, x: Array, axis: int = -1) -> Array:
        return np.argsort(x, axis=axis, kind="stable")

    def take_along(self, x: Array, idx: Array, axis: int) -> Array:
        return np.take_along_axis(x, idx, axis=axis)

    def take(self, x: Array, idx: Array, axis: int) -> Array:
        return np.take(x, idx, axis=axis)

    def stack(self, xs: list[Array], axis: int = 0) -> Array:
        return np.stack(xs, axis=axis)

    def concat(self, xs: list[Array], axis: int = 0) -> Array:
        return np.concatenate(xs, axis=axis)

    def expand(self, x: Array, axis: int) -> Array:
        return np.expand_dims(x, axis)

    def matmul(self, a: Array, b: Array) -> Array:
        return a @ b

    def solve(self, a: Array, b: Array) -> Array:
        """Batched solve of a @ x = b (b has a trailing vector axis); singular → NaN rows."""
        det = np.linalg.det(a)
        ok = np.abs(det) > 1e-12
        safe = np.where(ok[..., None, None], a, np.eye(a.shape[-1]))
        x = np.linalg.solve(safe, b[..., None])[..., 0]
        return np.where(ok[..., None], x, np.nan)

    def topk_smallest(self, x: Array, k: int) -> tuple[Array, Array]:
        """The k smallest values along the last axis, ascending, with their indices."""
        idx = np.argsort(x, axis=-1, kind="stable")[..., :k]
        return np.take_along_axis(x, idx, axis=-1), idx


class TorchBackend(Backend):
    """torch float64 on CPU or CUDA; same operations, same draws (numpy PCG64 on host)."""

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        import torch

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def asarray(self, x: Any) -> Array:
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(dtype=t.float64, device=self.device)
        return t.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)

    def asint(self, x: Any) -> Array:
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(dtype=t.int64, device=self.device)
        return t.as_tensor(np.asarray(x, dtype=np.int64), device=self.device)

    def asbool(self, x: Any) -> Array:
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(dtype=t.bool, device=self.device)
        return t.as_tensor(np.asarray(x, dtype=bool), device=self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        if isinstance(x, self.torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def zeros(self, shape: tuple[int, ...]) -> Array:
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def ones(self, shape: tuple[int, ...]) -> Array:
        return self.torch.ones(shape, dtype=self.torch.float64, device=self.device)

    def full(self, shape: tuple[int, ...], value: float) -> Array:
        return self.torch.full(shape, value, dtype=self.torch.float64, device=self.device)

    def bool_full(self, shape: tuple[int, ...], value: bool) -> Array:
        return self.torch.full(shape, value, dtype=self.torch.bool, device=self.device)

    def arange(self, n: int) -> Array:
        return self.torch.arange(n, dtype=self.torch.int64, device=self.device)

    def exp(self, x: Array) -> Array:
        return self.torch.exp(x)

    def log(self, x: Array) -> Array:
        return self.torch.log(x)

    def sqrt(self, x: Array) -> Array:
        return self.torch.sqrt(x)

    def abs(self, x: Array) -> Array:
        return self.torch.abs(x)

    def tanh(self, x: Array) -> Array:
        return self.torch.tanh(x)

    def sigmoid(self, x: Array) -> Array:
        return 0.5 * (1.0 + self.torch.tanh(0.5 * x))

    def clip(self, x: Array, lo: float, hi: float) -> Array:
        return self.torch.clamp(x, lo, hi)

    def _t(self, y: Array | float, like: Array) -> Array:
        if isinstance(y, self.torch.Tensor):
            return y
        return self.torch.as_tensor(y, dtype=like.dtype if like.is_floating_point()
                                    else self.torch.float64, device=self.device)

    def maximum(self, x: Array, y: Array | float) -> Array:
        return self.torch.maximum(x, self._t(y, x))

    def minimum(self, x: Array, y: Array | float) -> Array:
        return self.torch.minimum(x, self._t(y, x))

    def where(self, cond: Array, x: Array | float, y: Array | float) -> Array:
        t = self.torch
        if not isinstance(x, t.Tensor):
            x = t.as_tensor(x, dtype=t.float64, device=self.device)
        if not isinstance(y, t.Tensor):
            y = t.as_tensor(y, dtype=x.dtype, device=self.device)
        return t.where(cond, x, y)

    def isfinite(self, x: Array) -> Array:
        return self.torch.isfinite(x)

    def tofloat(self, x: Array) -> Array:
        return x.to(self.torch.float64)

    def toint(self, x: Array) -> Array:
        return x.to(self.torch.int64)

    def sum(self, x: Array, axis: int | None = None) -> Array:
        return self.torch.sum(x) if axis is None else self.torch.sum(x, dim=axis)

    def mean(self, x: Array, axis: int | None = None) -> Array:
        x = x if x.is_floating_point() else x.to(self.torch.float64)
        return self.torch.mean(x) if axis is None else self.torch.mean(x, dim=axis)

    def max(self, x: Array, axis: int | None = None) -> Array:
        return self.torch.max(x) if axis is None else self.torch.amax(x, dim=axis)

    def min(self, x: Array, axis: int | None = None) -> Array:
        return self.torch.min(x) if axis is None else self.torch.amin(x, dim=axis)

    def all(self, x: Array, axis: int | None = None) -> Array:
        return self.torch.all(x) if axis is None else self.torch.all(x, dim=axis)

    def any(self, x: Array, axis: int | None = None) -> Array:
        return self.torch.any(x) if axis is None else self.torch.any(x, dim=axis)

    def argmax(self, x: Array, axis: int) -> Array:
        # torch.argmax does not promise the first maximum; numpy does. Make it so.
        best = self.torch.amax(x, dim=axis, keepdim=True)
        n = x.shape[axis]
        shape = [1] * x.dim()
        shape[axis] = n
        idx = self.torch.arange(n, device=self.device).reshape(shape).expand_as(x)
        return self.torch.amin(self.torch.where(x == best, idx, n), dim=axis)

    def sort(self, x: Array, axis: int = -1) -> Array:
        return self.torch.sort(x, dim=axis, stable=True).values

    def argsort(self, x: Array, axis: int = -1) -> Array:
        return self.torch.sort(x, dim=axis, stable=True).indices

    def take_along(self, x: Array, idx: Array, axis: int) -> Array:
        return self.torch.take_along_dim(x, idx, dim=axis)

    def take(self, x: Array, idx: Array, axis: int) -> Array:
        return self.torch.index_select(x, axis % x.dim(), idx.reshape(-1)).reshape(
            x.shape[: axis % x.dim()] + tuple(idx.shape) + x.shape[axis % x.dim() + 1:])

    def stack(self, xs: list[Array], axis: int = 0) -> Array:
        return self.torch.stack(xs, dim=axis)

    def concat(self, xs: list[Array], axis: int = 0) -> Array:
        return self.torch.cat(xs, dim=axis)

    def expand(self, x: Array, axis: int) -> Array:
        return self.torch.unsqueeze(x, axis)

    def solve(self, a: Array, b: Array) -> Array:
        # Same rule as numpy (|det| ≤ 1e-12 → NaN), decided on the host: torch's batched
        # det/solve on tiny CPU matrices costs milliseconds per call in dispatch alone.
        if self.device == "cpu":
            return self.asarray(Backend.solve(self, self.to_numpy(a), self.to_numpy(b)))
        t = self.torch
        det = t.linalg.det(a)
        ok = t.abs(det) > 1e-12
        eye = t.eye(a.shape[-1], dtype=a.dtype, device=self.device).expand_as(a)
        safe = t.where(ok[..., None, None], a, eye)
        x = t.linalg.solve(safe, b[..., None])[..., 0]
        return t.where(ok[..., None], x, t.full_like(x, float("nan")))

    def topk_smallest(self, x: Array, k: int) -> tuple[Array, Array]:
        idx = self.torch.sort(x, dim=-1, stable=True).indices[..., :k]
        return self.torch.take_along_dim(x, idx, dim=-1), idx


_CACHE: dict[tuple[str, str | None], Backend] = {}


def get_backend(name: str = "numpy", device: str | None = None) -> Backend:
    """The backend called `name` ("numpy" or "torch"); torch picks CUDA when present."""
    key = (name, device)
    if key not in _CACHE:
        if name == "numpy":
            _CACHE[key] = Backend()
        elif name == "torch":
            try:
                _CACHE[key] = TorchBackend(device)
            except ImportError:
                raise MotorInputError(
                    "backend 'torch' needs the torch extra (pip install gd-node[torch])"
                ) from None
        else:
            raise MotorInputError(f"unknown backend {name!r}; use one of {BACKENDS}")
    return _CACHE[key]

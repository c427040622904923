"""The reference interpreter: executes a verified module with numpy. It is the numerics oracle.

Semantics per op (numpy semantics and trailing-axis broadcasting unless stated):

- Every float op computes in f32 from the stored operands and rounds its result
  once to the result dtype (f16 and bf16 round to nearest even). Composites
  (`softmax`, `layernorm`, `rmsnorm`, `rope`, `gelu`, `silu`) compute every
  intermediate in f32 and round once at the end.
- Integer `add sub mul neg` and `reduce_sum` wrap (two's complement); `cast` to an
  integer rounds to nearest even and saturates, NaN becomes 0 (isa/numerics.py).
- `matmul`: f16/bf16 operands, products and sums in f32, result rounded to the
  result dtype (f16, bf16 or f32; default the operand dtype); i8 x i8 sums exactly
  into i32. Leading axes are batch axes and broadcast.
- `gelu`: the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
  `{approximate = "none"}`: 0.5 x (1 + erf(x / sqrt 2)). Both are evaluated in forms that
  keep their relative accuracy for negative x (see `_gelu`).
- `layernorm(x, g, b)`: over the last axis, (x - mean) / sqrt(var + eps) * g + b
  with the biased variance; eps defaults to 1e-5.
- `rmsnorm(x, g)`: x / sqrt(mean(x^2) + eps) * g over the last axis; eps defaults to 1e-6.
- `rope(x, cos, sin)`: x * cos + rotate_half(x) * sin, where rotate_half(x) =
  concat(-x[..., d/2:], x[..., :d/2]) (the Hugging Face convention).
- `softmax {axis = -1}`: exp(x - max) / sum(exp(x - max)).
- reductions `{axis, keepdims = false}`: axis is an integer or a list; without it,
  every axis. `reduce_mean` is the f32 sum divided by the count.
- `gather(table, ids)`: rows of `table` along axis 0; an id outside the table is
  an error. `update_slice(x, v, i) {axis}`: x with v written at offset i along
  axis; an offset that does not fit is an error.
- `erf` (an extension of DESIGN.md's op list): the error function, computed in f64 and
  rounded once.
- `iota {axis}`: the index along `axis`, broadcast over the other axes.
- `constant {value}`: a scalar (filled) or a nested list of the result's shape.
- State: graphs read a `state` as its value at the start of the run; `commit`
  replaces it when the run ends. States start as zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from compiler.ir import Commit, Global, Graph, Module, Op, TensorType
from isa.diagnostics import LpuError, error
from isa.numerics import FLOATS, STORAGE, as_f32, convert, from_f32, to_storage, wrap_int


def _store(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype in FLOATS:
        return from_f32(x, dtype)
    if dtype == "bool":
        return np.asarray(x, dtype=np.bool_)
    return wrap_int(x, dtype)


def _work(x: np.ndarray) -> np.ndarray:
    """The working form of an operand: f32 for floats, int64 for integers."""
    if x.dtype.kind == "f":
        return as_f32(x)
    if x.dtype.kind in "iu":
        return x.astype(np.int64)
    return x


def _elementwise(fn: Callable) -> Callable:
    def run(op: Op, args: list[np.ndarray]) -> np.ndarray:
        with np.errstate(all="ignore"):
            return _store(fn(*[_work(a) for a in args]), op.result.type.dtype)

    return run


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


_ERFC = np.vectorize(math.erfc, otypes=[np.float64])
_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(op: Op, args):
    # Written in forms that do not cancel for negative x (1 + tanh(u) and 1 + erf(v) lose every
    # digit there in f32): 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), 0.5 x (1 + erf(v)) = 0.5 x erfc(-v).
    x = as_f32(args[0])
    with np.errstate(all="ignore"):
        if op.attr("approximate", "tanh") == "none":
            y = np.float32(0.5) * x * _ERFC(-x.astype(np.float64) / math.sqrt(2.0)).astype(np.float32)
        else:
            c = np.float32(math.sqrt(2.0 / math.pi))
            u = c * (x + np.float32(0.044715) * x * x * x)
            y = x / (np.float32(1.0) + np.exp(np.float32(-2.0) * u))
    return from_f32(y, op.result.type.dtype)


def _axes(op: Op, rank: int):
    axis = op.attr("axis")
    if axis is None:
        return tuple(range(rank))
    return tuple(a % rank for a in ((axis,) if isinstance(axis, int) else axis))


def _reduce(kind: str):
    def run(op: Op, args):
        x = args[0]
        axes = _axes(op, x.ndim)
        keep = bool(op.attr("keepdims", False))
        dtype = op.result.type.dtype
        if kind == "max":
            return np.max(x, axis=axes, keepdims=keep).astype(STORAGE[dtype])
        if dtype in FLOATS:
            total = np.sum(as_f32(x), axis=axes, keepdims=keep, dtype=np.float32)
            if kind == "mean":
                count = math.prod(x.shape[a] for a in axes)
                total = total / np.float32(count)
            return from_f32(total, dtype)
        return wrap_int(np.sum(x.astype(np.int64), axis=axes, keepdims=keep), dtype)

    return run


def _softmax(op: Op, args):
    x = as_f32(args[0])
    axis = op.attr("axis", -1)
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        y = e / np.sum(e, axis=axis, keepdims=True, dtype=np.float32)
    return from_f32(y, op.result.type.dtype)


def _layernorm(op: Op, args):
    x, g, b = (as_f32(a) for a in args)
    eps = np.float32(op.attr("eps", 1e-5))
    mean = np.mean(x, axis=-1, keepdims=True, dtype=np.float32)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True, dtype=np.float32)
    with np.errstate(all="ignore"):
        y = (x - mean) / np.sqrt(var + eps) * g + b
    return from_f32(y, op.result.type.dtype)


def _rmsnorm(op: Op, args):
    x, g = (as_f32(a) for a in args)
    eps = np.float32(op.attr("eps", 1e-6))
    with np.errstate(all="ignore"):
        y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32) + eps) * g
    return from_f32(y, op.result.type.dtype)


def _rope(op: Op, args):
    x, cos, sin = (as_f32(a) for a in args)
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return from_f32(x * cos + rotated * sin, op.result.type.dtype)


def _matmul(op: Op, args):
    a, b = args
    dtype = op.result.type.dtype
    if a.dtype == np.int8:
        return wrap_int(np.matmul(a.astype(np.int64), b.astype(np.int64)), dtype)
    return from_f32(np.matmul(as_f32(a), as_f32(b)), dtype)


def _where(op: Op, args):
    c, a, b = args
    return np.where(c, a, b).astype(STORAGE[op.result.type.dtype])


def _compare(fn):
    def run(op: Op, args):
        return fn(args[0], args[1])

    return run


def _gather(op: Op, args):
    table, ids = args
    bad = (ids < 0) | (ids >= table.shape[0])
    if np.any(bad):
        first = int(ids[bad].flat[0])
        raise error(f"gather id {first} is outside the table's {table.shape[0]} rows", op.loc)
    return table[ids]


def _update_slice(op: Op, args):
    x, v, index = args
    axis = op.attr("axis") % x.ndim
    start = int(index)
    if not 0 <= start <= x.shape[axis] - v.shape[axis]:
        raise error(
            f"update_slice offset {start} does not fit: {v.shape[axis]} entries at that "
            f"offset exceed the {x.shape[axis]} of axis {axis}",
            op.loc,
        )
    out = x.copy()
    where = [slice(None)] * x.ndim
    where[axis] = slice(start, start + v.shape[axis])
    out[tuple(where)] = v
    return out


def _slice(op: Op, args):
    x = args[0]
    where = [slice(None)] * x.ndim
    where[op.attr("axis") % x.ndim] = slice(op.attr("start"), op.attr("stop"))
    return x[tuple(where)].copy()


def _iota(op: Op, args):
    t = op.result.type
    axis = op.attr("axis") % t.rank
    shape = [1] * t.rank
    shape[axis] = t.shape[axis]
    idx = np.arange(t.shape[axis]).reshape(shape)
    return convert(np.broadcast_to(idx, t.shape), t.dtype)


def _constant(op: Op, args):
    t = op.result.type
    value = np.array(op.attr("value"), dtype=np.float64 if t.dtype in FLOATS else None)
    return np.broadcast_to(to_storage(value, t.dtype), t.shape).copy()


def _transpose(op: Op, args):
    perm = op.attr("perm")
    return np.transpose(args[0], None if perm is None else perm).copy()  # copy() keeps 0-d arrays 0-d


def _reshape(op: Op, args):
    return args[0].reshape(op.result.type.shape)


def _concat(op: Op, args):
    return np.concatenate(args, axis=op.attr("axis"))


IMPLS: dict[str, Callable[[Op, list[np.ndarray]], np.ndarray]] = {
    "add": _elementwise(lambda a, b: a + b),
    "sub": _elementwise(lambda a, b: a - b),
    "mul": _elementwise(lambda a, b: a * b),
    "div": _elementwise(lambda a, b: a / b),
    "max": _elementwise(np.maximum),
    "min": _elementwise(np.minimum),
    "neg": _elementwise(lambda a: -a),
    "relu": _elementwise(lambda a: np.maximum(a, 0)),
    "exp": _elementwise(np.exp),
    "log": _elementwise(np.log),
    "tanh": _elementwise(np.tanh),
    "sigmoid": _elementwise(_sigmoid),
    "silu": _elementwise(lambda a: a * _sigmoid(a)),
    "sqrt": _elementwise(np.sqrt),
    "rsqrt": _elementwise(lambda a: np.float32(1.0) / np.sqrt(a)),
    "recip": _elementwise(lambda a: np.float32(1.0) / a),
    "erf": lambda op, args: from_f32(_ERF(as_f32(args[0]).astype(np.float64)), op.result.type.dtype),
    "gelu": _gelu,
    "cast": lambda op, args: convert(args[0], op.attr("to")),
    "where": _where,
    "less": _compare(np.less),
    "greater": _compare(np.greater),
    "equal": _compare(np.equal),
    "reduce_sum": _reduce("sum"),
    "reduce_max": _reduce("max"),
    "reduce_mean": _reduce("mean"),
    "softmax": _softmax,
    "layernorm": _layernorm,
    "rmsnorm": _rmsnorm,
    "rope": _rope,
    "matmul": _matmul,
    "reshape": _reshape,
    "transpose": _transpose,
    "concat": _concat,
    "slice": _slice,
    "gather": _gather,
    "constant": _constant,
    "iota": _iota,
    "update_slice": _update_slice,
}


class Reference:
    """Runs the graphs of one module; `state` persists between runs (a decode loop)."""

    def __init__(self, module: Module, weights: Mapping[str, np.ndarray] | None = None):
        self.module = module
        self.weights = {p.name: _checked(weights, p) for p in module.params} if module.params else {}
        self.state = {s.name: np.zeros(s.type.shape, STORAGE[s.type.dtype]) for s in module.states}

    def run(self, graph_name: str, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        graph = self.module.graph(graph_name)
        env: dict[int, np.ndarray] = {}
        for a in graph.args:
            env[id(a)] = _checked(inputs, a)
        pending: dict[str, np.ndarray] = {}

        def value(o) -> np.ndarray:
            if isinstance(o, Global):
                return self.weights[o.name] if o.kind == "param" else self.state[o.name]
            return env[id(o)]

        for s in graph.body:
            if isinstance(s, Op):
                with np.errstate(all="ignore"):  # inf and NaN are values here, not accidents
                    out = IMPLS[s.name](s, [value(o) for o in s.operands])
                assert out.shape == s.result.type.shape and out.dtype == STORAGE[s.result.type.dtype], (
                    s.name,
                    out.shape,
                    out.dtype,
                    s.result.type,
                )
                env[id(s.result)] = out
            else:
                assert isinstance(s, Commit)
                pending[s.state.name] = value(s.value)
        results = [value(r) for r in graph.results]  # a returned @state is its value at the start
        self.state.update(pending)
        return results


def _checked(arrays: Mapping[str, np.ndarray] | None, holder) -> np.ndarray:
    """An array for a param or argument, in storage form; the shape must already be right."""
    name, t = holder.name, holder.type
    assert arrays is not None and name in arrays, f"missing array {name!r}"
    x = np.asarray(arrays[name])
    assert x.shape == t.shape, (name, x.shape, t)
    return to_storage(x, t.dtype)


def evaluate(
    module: Module,
    graph: str,
    inputs: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Run one graph once from zero state."""
    return Reference(module, weights).run(graph, inputs)


def storage_type(t: TensorType) -> np.dtype:
    return np.dtype(STORAGE[t.dtype])


__all__ = ["IMPLS", "Reference", "evaluate", "LpuError", "Graph"]

"""Decomposes composite ops into chip primitives (IR in, IR out; the result verifies).

softmax, layernorm, rmsnorm, rope, gelu, silu and reduce_mean become primitive
ops that the VXM, SXM and matrix units execute. Like the reference interpreter,
every intermediate is computed in f32 and the result is rounded once to the
op's dtype, so a decomposed module agrees with the reference within the float
tolerances of `--check`.
"""

from __future__ import annotations

import math

from compiler.ir import Commit, Global, Graph, Module, Op, Operand, TensorType, Value
from compiler.ops import infer
from compiler.verify import verify

COMPOSITES = ("softmax", "layernorm", "rmsnorm", "rope", "gelu", "silu", "reduce_mean")


class _Builder:
    """Emits primitive ops, inferring their result types."""

    def __init__(self, loc):
        self.ops: list[Op] = []
        self.loc = loc

    def op(
        self,
        name: str,
        *operands: Operand,
        declared: TensorType | None = None,
        hint: str | None = None,
        **attrs,
    ) -> Value:
        attrs = {k: v for k, v in attrs.items() if v is not None}
        t = infer(name, [o.type for o in operands], attrs, declared)
        v = Value(t, hint)
        self.ops.append(Op(name, tuple(operands), v, tuple(sorted(attrs.items())), self.loc))
        return v

    def const(self, value: float, dtype: str = "f32") -> Value:
        return self.op("constant", declared=TensorType(dtype, ()), value=float(value))

    def f32(self, x: Operand) -> Operand:
        return x if x.type.dtype == "f32" else self.op("cast", x, to="f32")

    def back(self, x: Value, dtype: str) -> Value:
        return x if dtype == "f32" else self.op("cast", x, to=dtype)


def _softmax(b: _Builder, op: Op) -> Value:
    x = b.f32(op.operands[0])
    axis = op.attr("axis", -1)
    m = b.op("reduce_max", x, axis=axis, keepdims=True)
    e = b.op("exp", b.op("sub", x, m))
    s = b.op("reduce_sum", e, axis=axis, keepdims=True)
    return b.back(b.op("div", e, s), op.result.type.dtype)


def _mean_last(b: _Builder, x: Value) -> Value:
    total = b.op("reduce_sum", x, axis=-1, keepdims=True)
    return b.op("mul", total, b.const(1.0 / x.type.shape[-1]))


def _layernorm(b: _Builder, op: Op) -> Value:
    x, g, beta = (b.f32(o) for o in op.operands)
    d = b.op("sub", x, _mean_last(b, x))
    var = _mean_last(b, b.op("mul", d, d))
    inv = b.op("rsqrt", b.op("add", var, b.const(op.attr("eps", 1e-5))))
    y = b.op("add", b.op("mul", b.op("mul", d, inv), g), beta)
    return b.back(y, op.result.type.dtype)


def _rmsnorm(b: _Builder, op: Op) -> Value:
    x, g = (b.f32(o) for o in op.operands)
    ms = _mean_last(b, b.op("mul", x, x))
    inv = b.op("rsqrt", b.op("add", ms, b.const(op.attr("eps", 1e-6))))
    return b.back(b.op("mul", b.op("mul", x, inv), g), op.result.type.dtype)


def _rope(b: _Builder, op: Op) -> Value:
    x, cos, sin = (b.f32(o) for o in op.operands)
    d = x.type.shape[-1]
    axis = x.type.rank - 1
    lo = b.op("slice", x, axis=axis, start=0, stop=d // 2)
    hi = b.op("slice", x, axis=axis, start=d // 2, stop=d)
    rotated = b.op("concat", b.op("neg", hi), lo, axis=axis)
    y = b.op("add", b.op("mul", x, cos), b.op("mul", rotated, sin))
    return b.back(y, op.result.type.dtype)


def _gelu(b: _Builder, op: Op) -> Value:
    x = b.f32(op.operands[0])
    if op.attr("approximate", "tanh") == "none":
        # 0.5 x (1 + erf(x / sqrt 2))
        e = b.op("erf", b.op("mul", x, b.const(1.0 / math.sqrt(2.0))))
        y = b.op("mul", b.op("mul", x, b.const(0.5)), b.op("add", e, b.const(1.0)))
    else:
        # 0.5 x (1 + tanh(u)) written as x / (1 + exp(-2u)), which does not cancel for x < 0
        x3 = b.op("mul", b.op("mul", x, x), x)
        u = b.op("add", x, b.op("mul", x3, b.const(0.044715)))
        minus_2u = b.op("mul", u, b.const(-2.0 * math.sqrt(2.0 / math.pi)))
        y = b.op("div", x, b.op("add", b.op("exp", minus_2u), b.const(1.0)))
    return b.back(y, op.result.type.dtype)


def _silu(b: _Builder, op: Op) -> Value:
    x = b.f32(op.operands[0])
    return b.back(b.op("mul", x, b.op("sigmoid", x)), op.result.type.dtype)


def _reduce_mean(b: _Builder, op: Op) -> Value:
    x = b.f32(op.operands[0])
    total = b.op("reduce_sum", x, axis=op.attr("axis"), keepdims=op.attr("keepdims", False))
    count = x.type.size // max(total.type.size, 1)
    return b.back(b.op("mul", total, b.const(1.0 / count)), op.result.type.dtype)


RULES = {
    "softmax": _softmax,
    "layernorm": _layernorm,
    "rmsnorm": _rmsnorm,
    "rope": _rope,
    "gelu": _gelu,
    "silu": _silu,
    "reduce_mean": _reduce_mean,
}


def decompose(m: Module) -> Module:
    """The same module with every composite op replaced by primitives."""
    graphs = []
    for g in m.graphs:
        replace: dict[int, Operand] = {}

        def sub(o: Operand) -> Operand:
            return replace.get(id(o), o)

        body: list = []
        for s in g.body:
            if isinstance(s, Commit):
                body.append(Commit(s.state, sub(s.value), s.loc, s.value_loc))
                continue
            operands = tuple(sub(o) for o in s.operands)
            op = Op(s.name, operands, s.result, s.attrs, s.loc, s.operand_locs, s.attr_locs, s.type_loc)
            if s.name in RULES:
                b = _Builder(s.loc)
                out = RULES[s.name](b, op)
                body.extend(b.ops)
                replace[id(s.result)] = out
            else:
                body.append(op)
        graphs.append(
            Graph(
                g.name,
                g.args,
                g.result_types,
                tuple(body),
                tuple(sub(r) for r in g.results),
                g.loc,
                g.result_locs,
                g.return_loc,
            )
        )
    out = Module(m.name, m.globals, tuple(graphs), m.loc)
    return verify(out)


def is_global(o: Operand) -> bool:
    return isinstance(o, Global)

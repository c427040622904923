"""Every IR op the verifier knows: arity, attributes, and the rule that gives its result type.

A rule takes the operand types, the attributes (defaults filled in) and the
written result type (or None) and returns the result type, or raises `OpError`
saying what is wrong and which part of the statement to point at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from compiler.ir import FLOAT_DTYPES, INT_DTYPES, NUMERIC_DTYPES, TensorType
from isa.spec import DTYPES

MAX_ELEMENTS = 2**40  # no tensor larger than this: it would not fit any system anyway


class OpError(Exception):
    """A rule failed. `where` is "op", "type", ("operand", i) or ("attr", key)."""

    def __init__(self, message: str, where: object = "op"):
        super().__init__(message)
        self.message = message
        self.where = where


REQUIRED = object()  # marker: an attribute without a default


@dataclass(frozen=True)
class AttrSpec:
    kind: str  # "int" | "ints" (int or list of ints) | "float" | "bool" | "dtype" | "literal" | "choice"
    default: object = REQUIRED
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class OpDef:
    name: str
    min_args: int
    max_args: int | None  # None: any number
    rule: Callable[[list[TensorType], dict, TensorType | None], TensorType]
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    needs_type: bool = False  # the result type cannot be inferred and must be written
    arg_names: tuple[str, ...] = ()


# -- helpers ---------------------------------------------------------------------


def broadcast(types: list[TensorType], op: str) -> tuple[int, ...]:
    """numpy broadcasting on trailing axes."""
    rank = max(t.rank for t in types)
    out = []
    for axis in range(rank):
        dims = {t.shape[axis - rank + t.rank] for t in types if axis - rank + t.rank >= 0}
        dims.discard(1)
        if len(dims) > 1:
            shown = " and ".join(str(t) for t in types)
            raise OpError(f"{op} operands do not broadcast: {shown}")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def same_dtype(types: list[TensorType], op: str, indices: list[int] | None = None) -> str:
    indices = list(range(len(types))) if indices is None else indices
    first = types[indices[0]].dtype
    for i in indices[1:]:
        if types[i].dtype != first:
            raise OpError(f"{op} mixes dtypes {first} and {types[i].dtype}; insert a cast", ("operand", i))
    return first


def want_dtype(t: TensorType, allowed: tuple[str, ...], op: str, i: int = 0, what: str = "") -> None:
    if t.dtype not in allowed:
        what = what or f"operand {i + 1}"
        raise OpError(f"{op} {what} must be {_or(allowed)}, got {t}", ("operand", i))


def _or(items: tuple[str, ...]) -> str:
    items = tuple(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def norm_axis(axis: int, rank: int, op: str, key: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise OpError(f"{op} {key} {axis} is out of range for rank {rank}", ("attr", key))
    return axis % rank


def with_declared(inferred: TensorType, declared: TensorType | None, op: str) -> TensorType:
    if declared is not None and declared != inferred:
        raise OpError(f"{op} result type {declared} does not match the inferred type {inferred}", "type")
    return inferred


# -- rules -----------------------------------------------------------------------


def elementwise(allowed: tuple[str, ...], result_dtype: str | None = None):
    def rule(ts, attrs, declared, op):
        dtype = same_dtype(ts, op)
        want_dtype(ts[0], allowed, op, what="operands" if len(ts) > 1 else "operand")
        shape = broadcast(ts, op)
        return with_declared(TensorType(result_dtype or dtype, shape), declared, op)

    return rule


def cast_rule(ts, attrs, declared, op):
    return with_declared(TensorType(attrs["to"], ts[0].shape), declared, op)


def where_rule(ts, attrs, declared, op):
    want_dtype(ts[0], ("bool",), op, 0, "condition")
    dtype = same_dtype(ts, op, [1, 2])
    return with_declared(TensorType(dtype, broadcast(ts, op)), declared, op)


def reduce_rule(allowed):
    def rule(ts, attrs, declared, op):
        t = ts[0]
        want_dtype(t, allowed, op, what="operand")
        axes = reduce_axes(attrs.get("axis"), t.rank, op)
        keep = attrs["keepdims"]
        shape = tuple((1 if keep else None) if i in axes else d for i, d in enumerate(t.shape))
        return with_declared(TensorType(t.dtype, tuple(d for d in shape if d is not None)), declared, op)

    return rule


def reduce_axes(axis, rank: int, op: str) -> set[int]:
    if axis is None:
        return set(range(rank))
    axes = [axis] if isinstance(axis, int) else list(axis)
    out = {norm_axis(a, rank, op) for a in axes}
    if len(out) != len(axes):
        raise OpError(f"{op} axis lists an axis twice: {list(axes)}", ("attr", "axis"))
    return out


def softmax_rule(ts, attrs, declared, op):
    want_dtype(ts[0], FLOAT_DTYPES, op, what="operand")
    norm_axis(attrs["axis"], ts[0].rank, op)
    return with_declared(ts[0], declared, op)


def norm_rule(ts, attrs, declared, op):
    x = ts[0]
    want_dtype(x, FLOAT_DTYPES, op, what="input")
    if x.rank < 1:
        raise OpError(f"{op} needs an input of rank 1 or more, got {x}", ("operand", 0))
    same_dtype(ts, op)
    for i, t in enumerate(ts[1:], start=1):
        if t.shape != (x.shape[-1],):
            raise OpError(
                f"{op} scale and bias must be [{x.shape[-1]}] (the last axis of {x}), got {t}",
                ("operand", i),
            )
    return with_declared(x, declared, op)


def rope_rule(ts, attrs, declared, op):
    x, cos, sin = ts
    want_dtype(x, FLOAT_DTYPES, op, what="input")
    same_dtype(ts, op)
    if x.rank < 1 or x.shape[-1] % 2:
        raise OpError(f"rope needs an even last axis (the head dimension), got {x}", ("operand", 0))
    for i, t in ((1, cos), (2, sin)):
        try:
            fits = broadcast([x, t], op) == x.shape and t.rank > 0 and t.shape[-1] == x.shape[-1]
        except OpError:
            fits = False
        if not fits:
            raise OpError(
                f"rope {'cos' if i == 1 else 'sin'} {t} must broadcast to {x} with the same last axis",
                ("operand", i),
            )
    return with_declared(x, declared, op)


def matmul_rule(ts, attrs, declared, op):
    a, b = ts
    for i, t in enumerate(ts):
        if t.rank < 2:
            raise OpError(f"matmul operands need rank 2 or more, got {t}", ("operand", i))
    dtype = same_dtype(ts, op)
    if dtype not in ("i8", "f16", "bf16"):
        raise OpError(
            f"matmul takes i8, f16 or bf16 operands (what the matrix unit multiplies), got {a}; cast first",
            ("operand", 0),
        )
    if a.shape[-1] != b.shape[-2]:
        raise OpError(f"matmul inner dimensions differ: {a} x {b}")
    batch = broadcast([TensorType(dtype, a.shape[:-2]), TensorType(dtype, b.shape[:-2])], op)
    shape = batch + (a.shape[-2], b.shape[-1])
    allowed = ("i32",) if dtype == "i8" else FLOAT_DTYPES
    if declared is None:
        return TensorType("i32" if dtype == "i8" else dtype, shape)
    if declared.dtype not in allowed:
        raise OpError(f"matmul of {dtype} gives {_or(allowed)}, not {declared.dtype}", "type")
    return with_declared(TensorType(declared.dtype, shape), declared, op)


def reshape_rule(ts, attrs, declared, op):
    x = ts[0]
    if declared.dtype != x.dtype:
        raise OpError(f"reshape keeps the dtype: {x} cannot become {declared}", "type")
    if declared.size != x.size:
        raise OpError(
            f"reshape keeps the element count: {x} has {x.size}, {declared} has {declared.size}", "type"
        )
    return declared


def transpose_rule(ts, attrs, declared, op):
    x = ts[0]
    perm = attrs.get("perm")
    perm = tuple(reversed(range(x.rank))) if perm is None else perm
    if isinstance(perm, int) or sorted(perm) != list(range(x.rank)):
        raise OpError(
            f"transpose perm {list(perm) if not isinstance(perm, int) else perm} is not a "
            f"permutation of the {x.rank} axes of {x}",
            ("attr", "perm"),
        )
    return with_declared(TensorType(x.dtype, tuple(x.shape[p] for p in perm)), declared, op)


def concat_rule(ts, attrs, declared, op):
    dtype = same_dtype(ts, op)
    rank = ts[0].rank
    axis = norm_axis(attrs["axis"], rank, op) if rank else 0
    if rank == 0:
        raise OpError("concat needs operands of rank 1 or more", ("operand", 0))
    for i, t in enumerate(ts):
        if t.rank != rank or any(d != e for k, (d, e) in enumerate(zip(t.shape, ts[0].shape)) if k != axis):
            raise OpError(
                f"concat operands must agree except on axis {axis}: {ts[0]} and {t}", ("operand", i)
            )
    shape = list(ts[0].shape)
    shape[axis] = sum(t.shape[axis] for t in ts)
    return with_declared(TensorType(dtype, tuple(shape)), declared, op)


def slice_rule(ts, attrs, declared, op):
    x = ts[0]
    if x.rank == 0:
        raise OpError(f"slice needs an operand of rank 1 or more, got {x}", ("operand", 0))
    axis = norm_axis(attrs["axis"], x.rank, op)
    start, stop = attrs["start"], attrs["stop"]
    if not 0 <= start < stop <= x.shape[axis]:
        raise OpError(
            f"slice needs 0 <= start < stop <= {x.shape[axis]} on axis {axis} of {x}, "
            f"got start = {start}, stop = {stop}",
            ("attr", "start"),
        )
    shape = list(x.shape)
    shape[axis] = stop - start
    return with_declared(TensorType(x.dtype, tuple(shape)), declared, op)


def gather_rule(ts, attrs, declared, op):
    table, ids = ts
    if table.rank < 1:
        raise OpError(f"gather needs a table of rank 1 or more, got {table}", ("operand", 0))
    want_dtype(ids, ("i32",), op, 1, "ids")
    return with_declared(TensorType(table.dtype, ids.shape + table.shape[1:]), declared, op)


def constant_rule(ts, attrs, declared, op):
    check_literal(attrs["value"], declared, op)
    return declared


def check_literal(value, t: TensorType, op: str) -> None:
    def leaf_ok(v) -> bool:
        if t.dtype == "bool":
            return isinstance(v, bool)
        if t.dtype in INT_DTYPES:
            return isinstance(v, int) and not isinstance(v, bool)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def shape_of(v, depth: int):
        if isinstance(v, tuple):
            if depth > len(t.shape) or not v:
                return None
            inner = {shape_of(e, depth + 1) for e in v}
            if len(inner) != 1 or None in inner:
                return None
            return (len(v),) + inner.pop()
        return () if leaf_ok(v) else None

    shape = shape_of(value, 0)
    if shape is None or shape not in ((), t.shape):
        raise OpError(
            f"{op} value must be one {t.dtype} or a nested list of shape "
            f"[{', '.join(map(str, t.shape))}] of {t.dtype}",
            ("attr", "value"),
        )


def iota_rule(ts, attrs, declared, op):
    want_dtype(declared, NUMERIC_DTYPES, op, what="result")
    if declared.rank == 0:
        raise OpError("iota needs a result of rank 1 or more", "type")
    norm_axis(attrs["axis"], declared.rank, op)
    return declared


def update_slice_rule(ts, attrs, declared, op):
    x, v, index = ts
    same_dtype(ts, op, [0, 1])
    if index.dtype != "i32" or index.rank != 0:
        raise OpError(f"update_slice index must be i32[], got {index}", ("operand", 2))
    if x.rank == 0:
        raise OpError(f"update_slice needs a target of rank 1 or more, got {x}", ("operand", 0))
    axis = norm_axis(attrs["axis"], x.rank, op)
    if v.rank != x.rank or any(
        (d != e) if k != axis else (d > e) for k, (d, e) in enumerate(zip(v.shape, x.shape))
    ):
        raise OpError(
            f"update_slice value {v} must match {x} except on axis {axis}, where it may be shorter",
            ("operand", 1),
        )
    return with_declared(x, declared, op)


# -- the table ---------------------------------------------------------------------

OPS: dict[str, OpDef] = {}


def define(name, min_args, max_args, rule, attrs=None, needs_type=False, arg_names=()):
    def bound(ts, a, declared, _rule=rule, _name=name):
        return _rule(ts, a, declared, _name)

    OPS[name] = OpDef(name, min_args, max_args, bound, attrs or {}, needs_type, arg_names)


SIGNED = FLOAT_DTYPES + INT_DTYPES
for _n in ("add", "sub", "mul", "max", "min"):
    define(_n, 2, 2, elementwise(NUMERIC_DTYPES), arg_names=("lhs", "rhs"))
define("div", 2, 2, elementwise(FLOAT_DTYPES), arg_names=("lhs", "rhs"))
define("neg", 1, 1, elementwise(SIGNED))
define("relu", 1, 1, elementwise(SIGNED))
for _n in ("exp", "log", "tanh", "sigmoid", "silu", "sqrt", "rsqrt", "recip", "erf"):
    define(_n, 1, 1, elementwise(FLOAT_DTYPES))
define("gelu", 1, 1, elementwise(FLOAT_DTYPES), {"approximate": AttrSpec("choice", "tanh", ("tanh", "none"))})
define("cast", 1, 1, cast_rule, {"to": AttrSpec("dtype")})
define("where", 3, 3, where_rule, arg_names=("cond", "a", "b"))
for _n in ("less", "greater"):
    define(_n, 2, 2, elementwise(NUMERIC_DTYPES, "bool"), arg_names=("lhs", "rhs"))
define("equal", 2, 2, elementwise(DTYPES, "bool"), arg_names=("lhs", "rhs"))
_reduce_attrs = {"axis": AttrSpec("ints", None), "keepdims": AttrSpec("bool", False)}
define("reduce_sum", 1, 1, reduce_rule(NUMERIC_DTYPES), _reduce_attrs)
define("reduce_max", 1, 1, reduce_rule(NUMERIC_DTYPES), _reduce_attrs)
define("reduce_mean", 1, 1, reduce_rule(FLOAT_DTYPES), _reduce_attrs)
define("softmax", 1, 1, softmax_rule, {"axis": AttrSpec("int", -1)})
define("layernorm", 3, 3, norm_rule, {"eps": AttrSpec("float", 1e-5)}, arg_names=("x", "g", "b"))
define("rmsnorm", 2, 2, norm_rule, {"eps": AttrSpec("float", 1e-6)}, arg_names=("x", "g"))
define("rope", 3, 3, rope_rule, arg_names=("x", "cos", "sin"))
define("matmul", 2, 2, matmul_rule, arg_names=("a", "b"))
define("reshape", 1, 1, reshape_rule, needs_type=True)
define("transpose", 1, 1, transpose_rule, {"perm": AttrSpec("ints", None)})
define("concat", 1, None, concat_rule, {"axis": AttrSpec("int")})
define(
    "slice", 1, 1, slice_rule, {"axis": AttrSpec("int"), "start": AttrSpec("int"), "stop": AttrSpec("int")}
)
define("gather", 2, 2, gather_rule, arg_names=("table", "ids"))
define("constant", 0, 0, constant_rule, {"value": AttrSpec("literal")}, needs_type=True)
define("iota", 0, 0, iota_rule, {"axis": AttrSpec("int")}, needs_type=True)
define(
    "update_slice", 3, 3, update_slice_rule, {"axis": AttrSpec("int")}, arg_names=("target", "value", "index")
)


def check_attrs(opdef: OpDef, attrs: dict) -> dict:
    """Check attribute names and kinds; return the attributes with defaults filled in."""
    for key in attrs:
        if key not in opdef.attrs:
            takes = ", ".join(opdef.attrs) if opdef.attrs else "no attributes"
            raise OpError(f"{opdef.name} has no attribute '{key}' (it takes {takes})", ("attr", key))
    full = {}
    for key, spec in opdef.attrs.items():
        if key not in attrs:
            if spec.default is REQUIRED:
                raise OpError(f"{opdef.name} needs the attribute '{key}'")
            full[key] = spec.default
            continue
        v = attrs[key]
        if not _attr_ok(spec, v):
            raise OpError(
                f"{opdef.name} attribute '{key}' must be {_attr_kind(spec)}, got {format_attr(v)}",
                ("attr", key),
            )
        full[key] = v
    return full


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _attr_ok(spec: AttrSpec, v) -> bool:
    if spec.kind == "int":
        return _is_int(v)
    if spec.kind == "ints":
        return _is_int(v) or (isinstance(v, tuple) and all(_is_int(e) for e in v))
    if spec.kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if spec.kind == "bool":
        return isinstance(v, bool)
    if spec.kind == "dtype":
        return v in DTYPES
    if spec.kind == "choice":
        return v in spec.choices
    if spec.kind == "literal":
        return True  # checked against the result type by the rule
    raise AssertionError(spec.kind)


def _attr_kind(spec: AttrSpec) -> str:
    return {
        "int": "an integer",
        "ints": "an integer or a list of integers",
        "float": "a number",
        "bool": "true or false",
        "dtype": "a dtype name (" + ", ".join(f'"{d}"' for d in DTYPES) + ")",
        "choice": " or ".join(f'"{c}"' for c in spec.choices),
    }[spec.kind]


def format_attr(v: object) -> str:
    """Attribute values in IR syntax (used by the printer and in messages)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(v, tuple):
        return "[" + ", ".join(format_attr(e) for e in v) + "]"
    raise AssertionError(f"not an attribute value: {v!r}")


def infer(name: str, types: list[TensorType], attrs: dict, declared: TensorType | None) -> TensorType:
    """Check one statement; return its result type. Raises OpError."""
    opdef = OPS[name]
    n = len(types)
    if n < opdef.min_args or (opdef.max_args is not None and n > opdef.max_args):
        raise OpError(f"{name} takes {_arity(opdef)}, got {n}")
    full = check_attrs(opdef, attrs)
    if opdef.needs_type and declared is None:
        raise OpError(f"{name} needs a result type (write ': TYPE' after it)")
    result = opdef.rule(types, full, declared)
    if result.size > MAX_ELEMENTS:
        raise OpError(
            f"{name} result {result} has {result.size} elements, more than the "
            f"{MAX_ELEMENTS} a tensor may have",
            "type" if declared else "op",
        )
    return result


def _arity(opdef: OpDef) -> str:
    if opdef.max_args is None:
        return f"{opdef.min_args} or more operands"
    if opdef.min_args == opdef.max_args:
        n = opdef.min_args
        names = f" ({', '.join(opdef.arg_names)})" if opdef.arg_names else ""
        return f"{n} operand{'s' if n != 1 else ''}{names}"
    return f"{opdef.min_args} to {opdef.max_args} operands"

"""The graph IR: a few small immutable classes.

A `Module` holds module symbols (`Global`: weights declared with `param`, SRAM
state declared with `state`) and one or more `Graph`s (entry points). A graph's
body is a list of `Op`s in SSA form (each defines one `Value`) and `Commit`s
(which write a new value back into a state at the end of the run).

Values compare by identity: two adds of the same inputs are two values. Two
modules compare equal when they have the same structure, whatever their values
are called (alpha-equivalence); source locations never take part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from isa.diagnostics import Loc
from isa.spec import DTYPES

FLOAT_DTYPES = ("f32", "f16", "bf16")
INT_DTYPES = ("i8", "i32")
NUMERIC_DTYPES = FLOAT_DTYPES + INT_DTYPES


@dataclass(frozen=True)
class TensorType:
    dtype: str  # one of isa.spec.DTYPES
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        assert self.dtype in DTYPES, self.dtype
        assert isinstance(self.shape, tuple), self.shape

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return prod(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True, eq=False)
class Value:
    """An SSA value: a graph argument or the result of one op."""

    type: TensorType
    name: str | None = None  # preferred printed name (without %); never semantic
    loc: Loc | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"%{self.name or '?'}: {self.type}"


@dataclass(frozen=True, eq=False)
class Global:
    """A module symbol: a `param` (weights) or a `state` (lives in SRAM across runs)."""

    kind: str  # "param" | "state"
    name: str  # without @
    type: TensorType
    loc: Loc | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"{self.kind} @{self.name}: {self.type}"


Operand = Value | Global


@dataclass(frozen=True, eq=False)
class Op:
    """`%result = name(operands) {attrs} : type`."""

    name: str
    operands: tuple[Operand, ...]
    result: Value
    attrs: tuple[tuple[str, object], ...] = ()  # sorted by key; lists stored as tuples
    loc: Loc | None = field(default=None, compare=False)  # the op name
    operand_locs: tuple[Loc | None, ...] = field(default=(), compare=False)
    attr_locs: tuple[Loc | None, ...] = field(default=(), compare=False)
    type_loc: Loc | None = field(default=None, compare=False)  # the written result type, if any

    def attr(self, key: str, default: object = None) -> object:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def attr_dict(self) -> dict[str, object]:
        return dict(self.attrs)


@dataclass(frozen=True, eq=False)
class Commit:
    """`commit @state = %value`: the state holds `value` once the graph has run."""

    state: Global
    value: Operand
    loc: Loc | None = field(default=None, compare=False)
    value_loc: Loc | None = field(default=None, compare=False)


Stmt = Op | Commit


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    args: tuple[Value, ...]
    result_types: tuple[TensorType, ...]
    body: tuple[Stmt, ...]
    results: tuple[Operand, ...]
    loc: Loc | None = field(default=None, compare=False)
    result_locs: tuple[Loc | None, ...] = field(default=(), compare=False)
    return_loc: Loc | None = field(default=None, compare=False)

    @property
    def ops(self) -> tuple[Op, ...]:
        return tuple(s for s in self.body if isinstance(s, Op))

    @property
    def commits(self) -> tuple[Commit, ...]:
        return tuple(s for s in self.body if isinstance(s, Commit))


@dataclass(frozen=True, eq=False)
class Module:
    name: str
    globals: tuple[Global, ...]
    graphs: tuple[Graph, ...]
    loc: Loc | None = field(default=None, compare=False)

    def graph(self, name: str) -> Graph:
        for g in self.graphs:
            if g.name == name:
                return g
        raise KeyError(name)

    def symbol(self, name: str) -> Global:
        for g in self.globals:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def params(self) -> tuple[Global, ...]:
        return tuple(g for g in self.globals if g.kind == "param")

    @property
    def states(self) -> tuple[Global, ...]:
        return tuple(g for g in self.globals if g.kind == "state")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Module):
            return NotImplemented
        return structure(self) == structure(other)

    def __hash__(self) -> int:
        return hash(structure(self))


def structure(m: Module) -> tuple:
    """A hashable description of a module with values named by position, not by name."""
    globals_ = tuple((g.kind, g.name, g.type) for g in m.globals)
    graphs = []
    for g in m.graphs:
        number: dict[int, int] = {}

        def ref(v: Operand) -> object:
            if isinstance(v, Global):
                return ("@", v.name)
            return ("%", number.get(id(v), -1))

        for a in g.args:
            number[id(a)] = len(number)
        body = []
        for s in g.body:
            if isinstance(s, Op):
                body.append((s.name, tuple(ref(o) for o in s.operands), s.attrs, s.result.type))
                number[id(s.result)] = len(number)
            else:
                body.append(("commit", s.state.name, ref(s.value)))
        graphs.append(
            (
                g.name,
                tuple(a.type for a in g.args),
                g.result_types,
                tuple(body),
                tuple(ref(r) for r in g.results),
            )
        )
    return (m.name, globals_, tuple(graphs))


def freeze_attr(value: object) -> object:
    """Attribute values are immutable: lists become tuples, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze_attr(v) for v in value)
    return value

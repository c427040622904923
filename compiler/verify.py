"""Checks a `Module` built in Python (by a pass, a model builder or a strategy) by the same
rules the parser applies to text: SSA, symbols, op arity, attributes and types.

Text from a file is verified while it is parsed; `verify` is for everything else
and runs between passes in debug mode.
"""

from __future__ import annotations

import re

from compiler.ir import Commit, Global, Module, Op
from compiler.ops import OPS, OpError, infer
from isa.diagnostics import Loc, LpuError, error

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]*$")


def verify(m: Module) -> Module:
    """Return `m` unchanged if it is well formed; raise LpuError otherwise."""
    symbols: dict[str, Global] = {}
    for g in m.globals:
        if g.kind not in ("param", "state"):
            raise error(f"@{g.name} has unknown kind {g.kind!r}", g.loc)
        if g.name in symbols:
            raise error(f"redefinition of @{g.name}", g.loc)
        symbols[g.name] = g
    graph_names: set[str] = set()
    for graph in m.graphs:
        if graph.name in graph_names:
            raise error(f"graph '{graph.name}' is defined twice", graph.loc)
        graph_names.add(graph.name)
        defined: set[int] = set()

        def check_use(o, loc: Loc | None, what: str) -> None:
            if isinstance(o, Global):
                if symbols.get(o.name) is not o:
                    raise error(f"{what} uses @{o.name}, which is not a symbol of module {m.name}", loc)
            elif id(o) not in defined:
                raise error(f"{what} uses %{o.name or '?'} before it is defined", loc)

        arg_names: set[str] = set()
        for a in graph.args:
            if id(a) in defined:
                raise error(f"graph '{graph.name}' lists argument %{a.name} twice", graph.loc)
            # argument names key the graph's inputs (X.npz, the Python API), so they must exist
            if not a.name or not _NAME.match(a.name) or a.name in arg_names:
                raise error(
                    f"graph '{graph.name}' arguments need distinct names (they key the "
                    f"inputs); got %{a.name or '?'}",
                    a.loc or graph.loc,
                )
            arg_names.add(a.name)
            defined.add(id(a))
        committed: set[str] = set()
        for s in graph.body:
            if isinstance(s, Op):
                if s.name not in OPS:
                    raise error(f"unknown op '{s.name}'", s.loc)
                for o in s.operands:
                    check_use(o, s.loc, s.name)
                try:
                    declared = None if _inferable(s) else s.result.type
                    inferred = infer(s.name, [o.type for o in s.operands], dict(s.attrs), declared)
                except OpError as e:
                    raise error(e.message, s.loc) from None
                if inferred != s.result.type:
                    raise error(
                        f"{s.name} result type {s.result.type} does not match the inferred type {inferred}",
                        s.loc,
                    )
                if id(s.result) in defined:
                    raise error(f"%{s.result.name} is defined twice", s.loc)
                defined.add(id(s.result))
            else:
                assert isinstance(s, Commit)
                check_use(s.state, s.loc, "commit")
                check_use(s.value, s.loc, "commit")
                if s.state.kind != "state":
                    raise error(f"commit needs a state, but @{s.state.name} is a param", s.loc)
                if s.state.name in committed:
                    raise error(f"@{s.state.name} is committed twice in one graph", s.loc)
                committed.add(s.state.name)
                if s.value.type != s.state.type:
                    raise error(
                        f"commit to @{s.state.name} ({s.state.type}) of a "
                        f"{s.value.type} value: the types differ",
                        s.loc,
                    )
        if len(graph.results) != len(graph.result_types):
            raise error(
                f"graph '{graph.name}' returns {len(graph.result_types)} values but return "
                f"lists {len(graph.results)}",
                graph.loc,
            )
        for r, t in zip(graph.results, graph.result_types):
            check_use(r, graph.loc, "return")
            if r.type != t:
                raise error(f"graph '{graph.name}' declares a {t} result but returns {r.type}", graph.loc)
    return m


def _inferable(op: Op) -> bool:
    """Whether the written result type is a choice (matmul's dtype) or needed (reshape)."""
    return not (OPS[op.name].needs_type or op.name in ("matmul",))


__all__ = ["verify", "LpuError"]

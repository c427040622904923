"""Prints a `Module` as canonical .lpu text; `parse(print_module(m)) == m`.

Canonical form: the module line, the declarations in order, each graph, one
blank line between sections, two-space indentation, attributes sorted by key,
every result type written out.
"""

from __future__ import annotations

import re

from compiler.ir import Commit, Global, Graph, Module, Op, Operand
from compiler.ops import format_attr

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]*$")


def print_module(m: Module) -> str:
    out = [f"module {m.name}", ""]
    for g in m.globals:
        out.append(f"{g.kind} @{g.name} : {g.type}")
    if m.globals:
        out.append("")
    for i, g in enumerate(m.graphs):
        if i:
            out.append("")
        out.extend(_graph_lines(g))
    return "\n".join(out) + "\n"


def _graph_lines(g: Graph) -> list[str]:
    names: dict[int, str] = {}
    used: set[str] = set()
    counter = [0]

    def name_of(v) -> str:
        if id(v) in names:
            return names[id(v)]
        hint = v.name if v.name and _NAME.match(v.name) else None
        if hint is None:
            while f"v{counter[0]}" in used:
                counter[0] += 1
            hint = f"v{counter[0]}"
        chosen, k = hint, 1
        while chosen in used:
            chosen = f"{hint}_{k}"
            k += 1
        used.add(chosen)
        names[id(v)] = chosen
        return chosen

    def ref(o: Operand) -> str:
        if isinstance(o, Global):
            return f"@{o.name}"
        assert id(o) in names, f"value {o!r} used before it is defined"
        return f"%{names[id(o)]}"

    args = ", ".join(f"%{name_of(a)}: {a.type}" for a in g.args)
    results = ", ".join(str(t) for t in g.result_types)
    lines = [f"graph {g.name}({args}) -> ({results}) {{"]
    for s in g.body:
        if isinstance(s, Op):
            lines.append("  " + _op_text(s, ref, name_of))
        else:
            assert isinstance(s, Commit)
            lines.append(f"  commit @{s.state.name} = {ref(s.value)}")
    rets = ", ".join(ref(r) for r in g.results)
    lines.append(f"  return {rets}" if rets else "  return")
    lines.append("}")
    return lines


def _op_text(op: Op, ref, name_of) -> str:
    operands = ", ".join(ref(o) for o in op.operands)
    text = f"%{name_of(op.result)} = {op.name}({operands})"
    if op.attrs:
        text += " {" + ", ".join(f"{k} = {format_attr(v)}" for k, v in op.attrs) + "}"
    return text + f" : {op.result.type}"

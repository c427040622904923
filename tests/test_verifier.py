"""The verifier: every op of DESIGN.md section 3 with its shape rule, type inference, and
`verify` on modules built in Python."""

from __future__ import annotations

import pytest

from compiler import parse
from compiler.ir import Commit, Global, Graph, Module, Op, TensorType, Value
from compiler.ops import OPS
from compiler.verify import verify
from isa.diagnostics import LpuError

DESIGN_OPS = """add sub mul div max min neg exp log tanh sigmoid relu gelu silu sqrt rsqrt recip cast
where less greater equal reduce_sum reduce_max reduce_mean softmax layernorm rmsnorm rope matmul
reshape transpose concat slice gather constant iota update_slice""".split()


EXTENSIONS = {"erf"}  # ops beyond DESIGN.md's list (docs/design-changes.md)


def test_every_design_op_is_known():
    assert set(DESIGN_OPS) | EXTENSIONS == set(OPS)


ARGS = ("%a: f16[2, 3, 4], %b: f16[4], %v: f16[3, 4], %m: f16[4, 5], %q: i8[3, 4], %qw: i8[4, 2], "
        "%c: bool[3, 4], %i: i32[2, 2], %p: i32[], %e: f16[8], %t: f16[10, 4]")


def infer(stmt: str) -> str:
    text = f"module m\ngraph g({ARGS}) -> () {{\n  %r = {stmt}\n  return\n}}\n"
    m = parse(text, "t.lpu")
    return str(m.graphs[0].ops[-1].result.type)


@pytest.mark.parametrize("stmt, expected", [
    ("add(%a, %b)", "f16[2, 3, 4]"),
    ("max(%v, %a)", "f16[2, 3, 4]"),
    ("div(%b, %b)", "f16[4]"),
    ("exp(%a)", "f16[2, 3, 4]"),
    ("neg(%q)", "i8[3, 4]"),
    ("relu(%q)", "i8[3, 4]"),
    ('gelu(%a) {approximate = "none"}', "f16[2, 3, 4]"),
    ('cast(%a) {to = "i8"}', "i8[2, 3, 4]"),
    ("where(%c, %v, %b)", "f16[3, 4]"),
    ("where(%c, %a, %b)", "f16[2, 3, 4]"),
    ("less(%a, %b)", "bool[2, 3, 4]"),
    ("equal(%c, %c)", "bool[3, 4]"),
    ("reduce_sum(%a)", "f16[]"),
    ("reduce_sum(%a) {axis = 1}", "f16[2, 4]"),
    ("reduce_max(%a) {axis = [0, -1], keepdims = true}", "f16[1, 3, 1]"),
    ("reduce_mean(%a) {keepdims = true}", "f16[1, 1, 1]"),
    ("softmax(%a) {axis = 1}", "f16[2, 3, 4]"),
    ("layernorm(%a, %b, %b)", "f16[2, 3, 4]"),
    ("rmsnorm(%v, %b) {eps = 1e-05}", "f16[3, 4]"),
    ("rope(%a, %v, %v)", "f16[2, 3, 4]"),
    ("matmul(%a, %m)", "f16[2, 3, 5]"),
    ("matmul(%v, %m) : f32[3, 5]", "f32[3, 5]"),
    ("matmul(%q, %qw)", "i32[3, 2]"),
    ("reshape(%a) : f16[6, 4]", "f16[6, 4]"),
    ("transpose(%a)", "f16[4, 3, 2]"),
    ("transpose(%a) {perm = [0, 2, 1]}", "f16[2, 4, 3]"),
    ("concat(%v, %v, %v) {axis = 0}", "f16[9, 4]"),
    ("concat(%a) {axis = -1}", "f16[2, 3, 4]"),
    ("slice(%a) {axis = 2, start = 1, stop = 4}", "f16[2, 3, 3]"),
    ("gather(%t, %i)", "f16[2, 2, 4]"),
    ("gather(%t, %p)", "f16[4]"),
    ("constant() {value = [[1, 2], [3, 4]]} : i32[2, 2]", "i32[2, 2]"),
    ("constant() {value = true} : bool[3]", "bool[3]"),
    ("iota() {axis = 0} : f32[4, 2]", "f32[4, 2]"),
    ("update_slice(%t, %v, %p) {axis = 0}", "f16[10, 4]"),
])
def test_type_inference(stmt, expected):
    assert infer(stmt) == expected


@pytest.mark.parametrize("stmt, message", [
    ("add(%a, %q)", "add mixes dtypes f16 and i8; insert a cast"),
    ("add(%c, %c)", "add operands must be f32, f16, bf16, i8 or i32, got bool[3, 4]"),
    ("div(%q, %q)", "div operands must be f32, f16 or bf16, got i8[3, 4]"),
    ("exp(%q)", "exp operand must be f32, f16 or bf16, got i8[3, 4]"),
    ("gelu(%a) {approximate = \"erf\"}", "gelu attribute 'approximate' must be \"tanh\" or \"none\", got \"erf\""),
    ("cast(%a)", "cast needs the attribute 'to'"),
    ("where(%v, %v, %v)", "where condition must be bool, got f16[3, 4]"),
    ("where(%c, %v, %q)", "where mixes dtypes f16 and i8"),
    ("reduce_sum(%a) {axis = [1, 1]}", "reduce_sum axis lists an axis twice: [1, 1]"),
    ("reduce_sum(%a) {axis = 3}", "reduce_sum axis 3 is out of range for rank 3"),
    ("reduce_mean(%q)", "reduce_mean operand must be f32, f16 or bf16"),
    ("softmax(%q)", "softmax operand must be f32, f16 or bf16"),
    ("layernorm(%a, %e, %b)", "layernorm scale and bias must be [4] (the last axis of f16[2, 3, 4]), got f16[8]"),
    ("rmsnorm(%a, %b, %b)", "rmsnorm takes 2 operands (x, g), got 3"),
    ("rope(%m, %m, %m)", "rope needs an even last axis (the head dimension), got f16[4, 5]"),
    ("rope(%a, %m, %m)", "rope cos f16[4, 5] must broadcast to f16[2, 3, 4] with the same last axis"),
    ("matmul(%b, %m)", "matmul operands need rank 2 or more, got f16[4]"),
    ("matmul(%v, %v)", "matmul inner dimensions differ: f16[3, 4] x f16[3, 4]"),
    ("matmul(%q, %qw) : i8[3, 2]", "matmul of i8 gives i32, not i8"),
    ("matmul(%v, %m) : i32[3, 5]", "matmul of f16 gives f32, f16 or bf16, not i32"),
    ("matmul(%v, %m) : f16[5, 3]", "matmul result type f16[5, 3] does not match the inferred type f16[3, 5]"),
    ("reshape(%a) : f32[24]", "reshape keeps the dtype"),
    ("transpose(%a) {perm = [0, 1]}", "transpose perm [0, 1] is not a permutation of the 3 axes"),
    ("transpose(%a) {perm = 1}", "is not a permutation"),
    ("concat(%v, %a) {axis = 0}", "concat operands must agree except on axis 0"),
    ("concat(%v, %m) {axis = 0}", "concat operands must agree except on axis 0: f16[3, 4] and f16[4, 5]"),
    ("concat() {axis = 0}", "concat takes 1 or more operands, got 0"),
    ("slice(%a) {axis = 0, start = 1, stop = 1}", "slice needs 0 <= start < stop <= 2 on axis 0"),
    ("slice(%a) {axis = 0, start = 0, stop = 3}", "slice needs 0 <= start < stop <= 2"),
    ("gather(%t, %e)", "gather ids must be i32, got f16[8]"),
    ("gather(%p, %i)", "gather needs a table of rank 1 or more"),
    ("constant() {value = 1.5} : i32[2]", "constant value must be one i32"),
    ("constant() {value = [1, 2]} : f32[2, 2]", "constant value must be one f32 or a nested list of shape [2, 2]"),
    ("constant() : f32[2]", "constant needs the attribute 'value'"),
    ("constant() {value = 1}", "constant needs a result type"),
    ("iota() {axis = 0} : bool[4]", "iota result must be f32, f16, bf16, i8 or i32"),
    ("iota() {axis = 0} : i32[]", "iota needs a result of rank 1 or more"),
    ("update_slice(%t, %v, %i) {axis = 0}", "update_slice index must be i32[], got i32[2, 2]"),
    ("update_slice(%v, %t, %p) {axis = 0}", "update_slice value f16[10, 4] must match f16[3, 4] except on axis 0"),
    ("update_slice(%t, %q, %p) {axis = 0}", "update_slice mixes dtypes f16 and i8"),
    ("neg(%a) {axis = 1}", "neg has no attribute 'axis' (it takes no attributes)"),
    ("softmax(%a) {axis = 1.5}", "softmax attribute 'axis' must be an integer, got 1.5"),
    ("layernorm(%a, %b, %b) {eps = \"small\"}", "must be a number, got \"small\""),
    ("reduce_sum(%a) {keepdims = 1}", "must be true or false, got 1"),
])
def test_shape_rules_refuse(stmt, message):
    with pytest.raises(LpuError) as e:
        infer(stmt)
    assert message in e.value.render()


# -- verify() on modules built in Python ----------------------------------------------

T = TensorType("f32", (2,))


def module(body, args=None, results=None, globals_=(), result_types=None):
    args = args if args is not None else []
    results = results if results is not None else []
    types = result_types if result_types is not None else tuple(r.type for r in results)
    return Module("m", tuple(globals_), (Graph("g", tuple(args), tuple(types), tuple(body), tuple(results)),))


def test_verify_accepts_a_good_module():
    x = Value(T, "x")
    y = Value(T, "y")
    verify(module([Op("exp", (x,), y)], [x], [y]))


def test_verify_rejects_use_before_definition():
    x, y, z = Value(T, "x"), Value(T, "y"), Value(T, "z")
    with pytest.raises(LpuError, match="exp uses %z before it is defined"):
        verify(module([Op("exp", (z,), y), Op("neg", (x,), z)], [x], [y]))


def test_verify_rejects_foreign_symbol_and_double_definition():
    x, y = Value(T, "x"), Value(T, "y")
    stranger = Global("param", "w", T)
    with pytest.raises(LpuError, match="uses @w, which is not a symbol of module m"):
        verify(module([Op("add", (x, stranger), y)], [x], [y]))
    with pytest.raises(LpuError, match="%y is defined twice"):
        verify(module([Op("exp", (x,), y), Op("neg", (x,), y)], [x], [y]))


def test_verify_rejects_wrong_result_type_and_unknown_op():
    x = Value(T, "x")
    wrong = Value(TensorType("f16", (2,)), "y")
    with pytest.raises(LpuError, match=r"exp result type f16\[2\] does not match the inferred type f32\[2\]"):
        verify(module([Op("exp", (x,), wrong)], [x], [wrong]))
    y = Value(T, "y")
    with pytest.raises(LpuError, match="unknown op 'frob'"):
        verify(module([Op("frob", (x,), y)], [x], [y]))


def test_verify_checks_commits_and_returns():
    x = Value(T, "x")
    param = Global("param", "p", T)
    state = Global("state", "s", T)
    with pytest.raises(LpuError, match="commit needs a state, but @p is a param"):
        verify(module([Commit(param, x)], [x], [], globals_=[param]))
    with pytest.raises(LpuError, match="@s is committed twice"):
        verify(module([Commit(state, x), Commit(state, x)], [x], [], globals_=[state]))
    with pytest.raises(LpuError, match="declares a f16"):
        verify(module([], [x], [x], result_types=(TensorType("f16", (2,)),)))
    with pytest.raises(LpuError, match="returns 0 values but return lists 1"):
        verify(module([], [x], [x], result_types=()))


def test_verify_requires_named_distinct_arguments():
    a, b = Value(T, "x"), Value(T, "x")
    with pytest.raises(LpuError, match="arguments need distinct names"):
        verify(module([], [a, b], [a]))
    with pytest.raises(LpuError, match=r"arguments need distinct names \(they key the inputs\); got %\?"):
        verify(module([], [Value(T, None)], []))


def test_ir_reference_documents_every_op():
    from conftest import ROOT

    doc = (ROOT / "docs" / "ir.md").read_text()
    table = doc[doc.index("## Operations"):doc.index("## Numerics")]
    cells = " ".join(line.split("|")[1] for line in table.splitlines() if line.startswith("| `"))
    documented = {w.strip("`") for w in cells.split()}
    assert set(OPS) <= documented, set(OPS) - documented

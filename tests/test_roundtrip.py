"""print(parse(print(m))) == print(m), for every IR file we have and for generated modules."""

from __future__ import annotations

import pytest
from conftest import ROOT
from hypothesis import given

from compiler import parse, print_module
from compiler.ir import Module
from compiler.verify import verify
from lpu.strategies import modules

IR_FILES = sorted((ROOT / "tests").rglob("*.lpu")) + sorted((ROOT / "examples").glob("*.lpu"))
GOOD_FILES = [p for p in IR_FILES if "diagnostics" not in p.parts]


def test_there_are_ir_files():
    assert len(GOOD_FILES) >= 4


@pytest.mark.parametrize("path", GOOD_FILES, ids=[p.name for p in GOOD_FILES])
def test_file_round_trips(path):
    m = parse(path.read_text(), str(path))
    text = print_module(m)
    again = parse(text, "printed.lpu")
    assert print_module(again) == text
    assert again == m
    verify(again)


def test_canonical_form_is_exact():
    text = """module  mlp   # comment
param @w1:f16[4,8]
graph main(%x:f16[2,4])->(f16[2,8]){%h=matmul(%x,@w1)
return %h}"""
    assert print_module(parse(text)) == (
        "module mlp\n"
        "\n"
        "param @w1 : f16[4, 8]\n"
        "\n"
        "graph main(%x: f16[2, 4]) -> (f16[2, 8]) {\n"
        "  %h = matmul(%x, @w1) : f16[2, 8]\n"
        "  return %h\n"
        "}\n"
    )


def test_attributes_print_sorted_and_in_ir_syntax():
    text = """module m
graph g(%x: f32[2, 3]) -> (f32[2, 1]) {
  %s = reduce_sum(%x) {keepdims = true, axis = [1]}
  %c = constant() {value = [[1, 2.5, -inf]]} : f32[1, 3]
  %t = gelu(%x) {approximate = "none"}
  return %s
}
"""
    printed = print_module(parse(text))
    assert "%s = reduce_sum(%x) {axis = [1], keepdims = true} : f32[2, 1]" in printed
    assert "%c = constant() {value = [[1, 2.5, -inf]]} : f32[1, 3]" in printed
    assert '%t = gelu(%x) {approximate = "none"} : f32[2, 3]' in printed


def test_equality_ignores_names_but_not_structure():
    a = parse("module m\ngraph g(%x: f32[2]) -> (f32[2]) {\n  %y = exp(%x)\n  return %y\n}\n")
    b = parse("module m\ngraph g(%in: f32[2]) -> (f32[2]) {\n  %out = exp(%in)\n  return %out\n}\n")
    c = parse("module m\ngraph g(%x: f32[2]) -> (f32[2]) {\n  %y = log(%x)\n  return %y\n}\n")
    d = parse("module m\ngraph g(%x: f32[2]) -> (f32[2]) {\n  %y = exp(%x)\n  return %x\n}\n")
    assert a == b and hash(a) == hash(b)
    assert a != c and a != d


def test_printer_renames_clashing_or_missing_names():
    from compiler.ir import Graph, Op, TensorType, Value

    t = TensorType("f32", (2,))
    x = Value(t, "v")
    y = Value(t, "v")  # clashes with x
    z = Value(t, None)  # unnamed
    g = Graph("g", (x,), (t,), (Op("exp", (x,), y), Op("neg", (y,), z)), (z,))
    text = print_module(Module("m", (), (g,)))
    assert "%v_1 = exp(%v)" in text and "%v0 = neg(%v_1)" in text
    assert parse(text) == Module("m", (), (g,))


@given(modules())
def test_generated_modules_round_trip(m):
    verify(m)
    text = print_module(m)
    parsed = parse(text, "generated.lpu")
    assert parsed == m
    assert print_module(parsed) == text

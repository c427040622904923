"""Decomposition of composites into primitives agrees with the reference interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given

from compiler import parse
from compiler.decompose import COMPOSITES, decompose
from compiler.reference import Reference
from isa.diagnostics import LpuError
from lpu.arrays import random_inputs, random_weights
from lpu.strategies import modules

TOL = {"f32": (2e-5, 1e-5), "f16": (2e-3, 2e-3), "bf16": (2e-2, 2e-2)}


def same(a: np.ndarray, b: np.ndarray, dtype: str) -> None:
    if dtype in TOL:
        rtol, atol = TOL[dtype]
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol)
    else:
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("stmt, extra", [
    ("softmax(%x)", ""), ("softmax(%x) {axis = 0}", ""),
    ("layernorm(%x, %g, %b) {eps = 0.01}", ""), ("rmsnorm(%x, %g)", ""),
    ("gelu(%x)", ""), ('gelu(%x) {approximate = "none"}', ""), ("silu(%x)", ""),
    ("reduce_mean(%x) {axis = 0, keepdims = true}", ""), ("rope(%x, %c, %s)", ""),
])
def test_each_composite(stmt, extra, dtype):
    text = (f"module m\ngraph main(%x: {dtype}[6, 8], %g: {dtype}[8], %b: {dtype}[8], %c: {dtype}[6, 8], "
            f"%s: {dtype}[6, 8]) -> ({dtype}[{'1, 8' if 'reduce_mean' in stmt else '6, 8'}]) {{\n"
            f"  %r = {stmt}\n  return %r\n}}\n")
    m = parse(text)
    d = decompose(m)
    assert not any(op.name in COMPOSITES for g in d.graphs for op in g.ops)
    inputs = random_inputs(m, m.graphs[0], seed=4)
    inputs["x"] = inputs["x"] * 3
    want = Reference(m).run("main", inputs)[0]
    got = Reference(d).run("main", inputs)[0]
    same(got, want, dtype)


def test_examples_decompose_and_agree():
    for path in sorted((ROOT / "examples").glob("*.lpu")):
        m = parse(path.read_text(), str(path))
        d = decompose(m)
        w = random_weights(m, 0)
        x = random_inputs(m, m.graphs[0], 0)
        for a, b, t in zip(Reference(m, w).run("main", x), Reference(d, w).run("main", x), m.graphs[0].result_types):
            same(a, b, t.dtype)


@given(modules(max_ops=6))
def test_property_decompose_keeps_meaning(m):
    d = decompose(m)
    w = random_weights(m, 2)
    ra, rb = Reference(m, w), Reference(d, w)
    for g in m.graphs:
        inputs = random_inputs(m, g, 2)
        try:
            outs_a = ra.run(g.name, inputs)
        except LpuError:
            return  # documented run-time refusals (gather ids): nothing to compare
        outs_b = rb.run(g.name, inputs)
        for a, b, t in zip(outs_a, outs_b, g.result_types):
            if t.dtype in TOL:
                fa, fb = a.astype(np.float64), b.astype(np.float64)
                finite = np.isfinite(fa) & np.isfinite(fb)
                rtol, atol = TOL[t.dtype]
                ok = ~finite | np.isclose(fa, fb, rtol=rtol * 10, atol=atol * 10)
                assert ok.all(), (g.name, fa[~ok][:3], fb[~ok][:3])
            else:
                assert np.array_equal(a, b)

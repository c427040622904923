"""The checker bites: single mutations of compiled programs (an issue cycle moved, a stream or an
address changed) are caught by a timing violation or by different outputs, unless provably
equivalent: every read still sees the same producer's vector and every matrix pass the same
weights, so no value can change."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from compiler import parse
from compiler.backend import compile_module
from isa.chip import TINY
from isa.system import SystemConfig, named_system
from lpu.arrays import random_inputs, random_weights
from lpu.mutate import campaign, dataflow, mutants  # noqa: F401  (the benchmark imports them from here)

MLP = """module mlp
param @w1 : f16[32, 48]
param @b1 : f16[48]
param @w2 : f16[48, 32]
param @ln_g : f16[32]
param @ln_b : f16[32]
graph main(%x: f16[4, 32]) -> (f16[4, 32]) {
  %n = layernorm(%x, @ln_g, @ln_b)
  %h = matmul(%n, @w1)
  %hb = add(%h, @b1)
  %a = gelu(%hb)
  %y = matmul(%a, @w2)
  %r = add(%x, %y)
  return %r
}
"""


def program_for(source: str, system: str, tp: int = 1, pp: int = 1):
    """(program, inputs, entry) for a named test program; system "tinyN" is N tiny chips in a ring."""
    if system.startswith("tiny") and system[4:].isdigit():
        n = int(system[4:])
        links = tuple((a, (a + 1) % n) for a in range(n))
        sysc = SystemConfig(system, TINY.replace(c2c_links=4), n, links, link_latency_cycles=12)
        m = parse(MLP if source == "mlp" else (ROOT / "examples" / "gpt_block.lpu").read_text())
        p = compile_module(m, sysc, random_weights(m, 0), tp=tp, pp=pp)
        return p, random_inputs(m, m.graphs[0], 0), "main"
    if source == "kv_decode":
        m = parse((ROOT / "tests" / "ir" / "kv_decode.lpu").read_text())
        p = compile_module(m, named_system(system), random_weights(m, 0))
        return p, {"tok": np.array([5], np.int32), "pos": np.int32(2)}, "decode"
    text = MLP if source == "mlp" else (ROOT / "examples" / "gpt_block.lpu").read_text()
    m = parse(text)
    p = compile_module(m, named_system(system), random_weights(m, 0))
    return p, random_inputs(m, m.graphs[0], 0), "main"


@pytest.mark.parametrize(
    "system, source, tp, pp",
    [("tiny", "mlp", 1, 1), ("tsp", "gpt_block", 1, 1), ("tiny", "kv_decode", 1, 1), ("tiny4", "mlp", 2, 2)],
)
def test_every_non_equivalent_mutation_is_caught(system, source, tp, pp):
    p, inputs, entry = program_for(source, system, tp, pp)
    timing, values, equivalent, survivors = campaign(p, inputs, count=120, seed=7, entry=entry)
    assert survivors == [], survivors
    assert timing + values + equivalent == 120
    assert timing >= 100  # nearly every mutation is a timing violation, not only a wrong value

"""The checker bites: single mutations of compiled programs (an issue cycle moved, a stream or an
address changed) are caught by a timing violation or by different outputs, unless provably
equivalent: every read still sees the same producer's vector and every matrix pass the same
weights, so no value can change."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import ROOT

from compiler import parse
from compiler.backend import compile_module
from emulator.run import Emulator
from isa.chip import TINY
from isa.spec import BY_MNEMONIC, FIELDS
from isa.system import SystemConfig, named_system
from lpu.arrays import random_inputs, random_weights

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


def mutants(p, count: int, seed: int):
    """Random single mutations: an issue cycle +-1..3, a stream field, an address by one vector, and
    (on many chips) a send or receive moved by +-1..3 cycles or re-targeted to another link."""
    rng = np.random.default_rng(seed)
    S = p.system.chip.streams_per_direction
    c2c = np.nonzero(np.isin(p.opcode, [BY_MNEMONIC["send"].code, BY_MNEMONIC["recv"].code]))[0]
    made = 0
    while made < count:
        j = int(rng.integers(len(p)))
        q = copy.copy(p)
        q.cycle, q.fields = p.cycle.copy(), p.fields.copy()
        kind = int(rng.integers(4 if len(c2c) else 3))
        if kind == 3:
            j = int(rng.choice(c2c))
            kind = 0 if rng.integers(2) else 3
        spec = p.spec(j)
        if kind == 3:
            k = spec.operands.index("link")
            links = len(p.system.chip_links(int(p.chip[j])))
            q.fields[j, k] = (q.fields[j, k] + int(rng.integers(1, links + 1))) % (links + 1)
            what = f"#{j} {spec.mnemonic} link -> {int(q.fields[j, k])}"
        elif kind == 0:
            d = int(rng.choice([-3, -2, -1, 1, 2, 3]))
            if q.cycle[j] + d < 0:
                continue
            q.cycle[j] += d
            what = f"#{j} {spec.mnemonic} cycle {d:+d}"
        elif kind == 1:
            cols = [k for k, f in enumerate(spec.operands) if FIELDS[f].kind == "stream"]
            if not cols:
                continue
            k = int(rng.choice(cols))
            q.fields[j, k] = (q.fields[j, k] + int(rng.integers(1, 2 * S))) % (2 * S)
            what = f"#{j} {spec.mnemonic} {spec.operands[k]} -> {int(q.fields[j, k])}"
        else:
            if "addr" not in spec.operands:
                continue
            k = spec.operands.index("addr")
            step = max(int(q.fields[j, spec.operands.index("step")]), 1)
            d = int(rng.choice([-1, 1])) * step
            if q.fields[j, k] + d < 0 or q.fields[j, k] + d >= p.system.chip.words_per_slice - step * int(
                p.n[j]
            ):
                continue
            q.fields[j, k] += d
            what = f"#{j} {spec.mnemonic} addr {d:+d}"
        made += 1
        yield what, q


def dataflow(p, inputs, entry: str = "main") -> dict:
    """Which producer (instruction, vector) every input of every vector step saw, SRAM included."""
    run = Emulator(p).run(entry, inputs, trace=True)
    r, seen = run.extra["resolved"], run.extra["mem_seen"]

    def who(step):
        return (int(r.ins[step]), int(r.i[step])) if step >= 0 else int(step)

    flow = {}
    for s in range(len(r.ins)):
        flow[(int(r.ins[s]), int(r.i[s]))] = (
            tuple(who(int(x)) for x in r.stream_src[s]),
            who(int(seen[s])),
            who(int(r.weights[s])),
            who(int(r.acc_src[s])),
            who(int(r.link_src[s])),
        )
    iw_rows = {}
    for s in range(len(r.ins)):
        if r.iw_index[s] >= 0:
            iw_rows[int(r.ins[s])] = tuple(who(int(x)) for x in r.iw_rows[r.iw_index[s]])
    return {"flow": flow, "iw": iw_rows}


def campaign(p, inputs, count: int, seed: int, entry: str = "main"):
    def run(q):
        emu = Emulator(q)
        return emu.run(entry, inputs), emu.state

    clean, clean_state = run(p)
    assert clean.violations == []
    base_flow = dataflow(p, inputs, entry)
    caught_timing = caught_values = equivalent = 0
    survivors = []
    for what, q in mutants(p, count, seed):
        r, state = run(q)
        if r.violations:
            caught_timing += 1
        elif not all(np.array_equal(a, b) for a, b in zip(r.outputs, clean.outputs)) or not all(
            np.array_equal(state[k], clean_state[k]) for k in clean_state
        ):
            caught_values += 1
        elif dataflow(q, inputs, entry) == base_flow:
            equivalent += 1
        else:
            survivors.append(what)
    return caught_timing, caught_values, equivalent, survivors


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

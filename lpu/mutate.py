"""Single mutations of a compiled program, and whether the emulator's checks catch them.

A mutation moves an issue cycle by +-1..3, changes a stream field or an address by one vector,
and on many chips moves a send or receive or re-targets it to another link. It is *caught* by a
timing violation or by different outputs (or state), *equivalent* when every read still sees the
same producer's vector and every matrix pass the same weights (so no value can change), and
otherwise *survives*: a gap in the checks.
"""

from __future__ import annotations

import copy

import numpy as np

from emulator.run import Emulator
from isa.spec import BY_MNEMONIC, FIELDS


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

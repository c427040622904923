"""A program as Chrome / Perfetto trace-event JSON, from the program file alone.

One process per chip, one thread (track) per queue, a complete event ("ph": "X") per
instruction (its mnemonic; operands, source op and IR location in args), a flow arrow from
each `send` to the `recv` that takes its vectors, and counter tracks for the SRAM a chip holds
while an entry runs (its pinned tensors: params, states, inputs and outputs) and for the vectors
in flight on its links. Time is in microseconds at the chip clock; every entry is laid after the
previous one (`entry_offset_us` in the metadata). Opens in ui.perfetto.dev and chrome://tracing.
"""

from __future__ import annotations

import numpy as np

from isa.assembly import instruction_text
from isa.program import Program
from isa.spec import BY_CODE


def trace_events(p: Program) -> dict:
    chip_cfg = p.system.chip
    clock = chip_cfg.clock_mhz
    queues = chip_cfg.queue_table()
    ops = p.meta.get("ops") or []
    op_of = p.meta.get("op_of") or []
    gap = 100  # cycles between entries on the timeline
    offset = {}
    at = 0
    for name in p.entries:
        offset[name] = at
        at += p.length(name) + gap
    events: list[dict] = []
    chips = sorted(set(p.chip.tolist())) or [0]
    for c in chips:
        events.append({"ph": "M", "name": "process_name", "pid": c, "tid": 0, "args": {"name": f"chip {c}"}})
        events.append(
            {"ph": "M", "name": "process_sort_index", "pid": c, "tid": 0, "args": {"sort_index": c}}
        )
        used = sorted(set(p.queue[p.chip == c].tolist()))
        for q in used:
            events.append(
                {"ph": "M", "name": "thread_name", "pid": c, "tid": q, "args": {"name": queues[q].name}}
            )
            events.append(
                {"ph": "M", "name": "thread_sort_index", "pid": c, "tid": q, "args": {"sort_index": q}}
            )
    for i in range(len(p)):
        spec = BY_CODE[int(p.opcode[i])]
        entry = p.entries[int(p.entry[i])]
        start = int(p.cycle[i]) + offset[entry]
        n = int(p.n[i])
        dur = max(spec.busy_cycles(n), 1)
        args = {"id": i, "entry": entry, "cycle": int(p.cycle[i]), "n": n, "text": instruction_text(p, i)}
        if i < len(op_of):
            text, _, loc = ops[op_of[i]].partition(" @ ")
            args["op"] = text
            if loc:
                args["loc"] = loc
        events.append(
            {
                "ph": "X",
                "name": spec.mnemonic,
                "cat": spec.unit.value,
                "pid": int(p.chip[i]),
                "tid": int(p.queue[i]),
                "ts": start / clock,
                "dur": dur / clock,
                "args": args,
            }
        )
    # flows: each send to the receive that takes it (one arrow per pair of instructions)
    from lpu.api import link_vectors

    pairs = {}
    in_flight: dict[int, list[tuple[int, int]]] = {}
    for v in link_vectors(p):
        pairs.setdefault((v.send, v.recv), None)
        e = p.entries[int(p.entry[v.recv])]
        in_flight.setdefault(v.src_chip, []).append((v.handoff + offset[e], 1))
        in_flight[v.src_chip].append((v.arrival + offset[e], -1))
    for k, (s, r) in enumerate(sorted(pairs)):
        e = p.entries[int(p.entry[r])]
        common = {"name": "link", "cat": "C2C", "id": k}
        events.append(
            {
                **common,
                "ph": "s",
                "pid": int(p.chip[s]),
                "tid": int(p.queue[s]),
                "ts": (int(p.cycle[s]) + offset[e]) / clock,
            }
        )
        events.append(
            {
                **common,
                "ph": "f",
                "bp": "e",
                "pid": int(p.chip[r]),
                "tid": int(p.queue[r]),
                "ts": (int(p.cycle[r]) + offset[e]) / clock,
            }
        )
    for c, changes in sorted(in_flight.items()):
        level = 0
        for t, d in sorted(changes):
            level += d
            events.append(
                {"ph": "C", "name": "vectors on links", "pid": c, "ts": t / clock, "args": {"vectors": level}}
            )
    # SRAM in use: what each entry pins on each chip for the whole run
    lanes = chip_cfg.lanes
    for name in p.entries:
        start, end = offset[name], offset[name] + p.length(name)
        for c in chips:
            pinned = sum(
                pl.words(lanes) * lanes
                for pl in p.placements
                if pl.chip == c and (pl.role in ("param", "state") or pl.graph == name)
            )
            for t, value in ((start, pinned), (end, 0)):
                events.append(
                    {
                        "ph": "C",
                        "name": "SRAM pinned bytes",
                        "pid": c,
                        "ts": t / clock,
                        "args": {"bytes": value},
                    }
                )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "metadata": {
            "program": "lpu",
            "clock_mhz": clock,
            "entry_offset_us": {k: v / clock for k, v in offset.items()},
            "instructions": len(p),
        },
    }


def instruction_events(trace: dict) -> np.ndarray:
    """The instruction ids of a trace's complete events (each instruction should appear once)."""
    return np.array([e["args"]["id"] for e in trace["traceEvents"] if e.get("ph") == "X"], np.int64)

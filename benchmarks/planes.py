"""Matrix planes balanced by weight rows against sides taking turns: cycles of the same models.

    python benchmarks/planes.py [--big]

A matmul's blocks go to the two hemispheres' planes in turn. Before stop 23 the turns ran on from
matmul to matmul, so a layer whose matmuls have an even number of unequal blocks, or large and small
weights in turn, put more weight rows on one side every layer (Llama-70B's: up to 1.5x), and a
block of one column chunk always took plane 0 of its side (Llama-70B's plane 0s loaded 7x the
rows of the plane 1s). Now each matmul starts on the side that has loaded fewer rows
(`Lowering.start_sides`) and such a block takes its side's plane that has loaded fewer
(`Lowering.side`). And a block held each of its planes whole for its span, so a one-tile block
kept its plane for twice its load; now it holds the plane's shadow buffer, array and accumulators
each from first use to last (`Lowering._hold_plane`), and the next block loads while the one
before multiplies and drains. And a weight sits in one MEM slice (one port, one row per cycle):
a matmul of fewer rows than a tile whose activation feeds four or more matmuls now goes whole on
the plane that loaded fewest (`Lowering.one_plane`), so that several weights stream at once.
Compiled timing-only four ways in this process (stop 22's policy, balanced planes, with the
finer holds, with whole matmuls on one plane: `Lowering.balance_sides`,
`Lowering.hold_planes_whole`, `Lowering.one_plane_siblings`); cycles are exact (no timing
noise), so one run each. Prints prefill and decode (or encode) cycles and the ratio of the last
to the first; with --big also two stages of Llama-70B in int8 on dragonfly:8 (tp=8, about a
minute per compile).
"""

from __future__ import annotations

import argparse
import time

from compiler import parse
from compiler.backend import compile_module
from compiler.lower import Lowering
from isa.system import named_system
from models import bert, gpt2, llama

CONFIGS = [
    (
        "GPT-2 d64, 4 layers, node tp4 pp2 (the demo)",
        "gpt2",
        dict(layers=4, d_model=64, heads=4, vocab=128),
        "node",
        4,
        2,
    ),
    ("GPT-2 d768, 2 layers, 1 chip", "gpt2", dict(layers=2, d_model=768, heads=12, vocab=1024), "node", 1, 1),
    (
        "Llama d1024 int8, 2 layers, node tp2 pp2",
        "llama",
        dict(layers=2, d_model=1024, heads=16, kv_heads=4, ffn=2816, vocab=2048, dtype="i8"),
        "node",
        2,
        2,
    ),
    (
        "Llama d2048, 2 layers, node tp4 pp2",
        "llama",
        dict(layers=2, d_model=2048, heads=16, kv_heads=4, ffn=5632, vocab=4096),
        "node",
        4,
        2,
    ),
    (
        "BERT d768, 2 layers, node tp2",
        "bert",
        dict(layers=2, d_model=768, heads=12, ffn=3072, vocab=1024),
        "node",
        2,
        1,
    ),
]
BIG = (
    "Llama-70B int8, 2 of 80 layers, dragonfly:8 tp8 pp2",
    "llama",
    dict(layers=2, d_model=8192, heads=64, kv_heads=8, ffn=28672, vocab=32000, dtype="i8"),
    "dragonfly:8",
    8,
    2,
)
FAMILIES = {"gpt2": (gpt2.GPT2Config, gpt2.module_text), "llama": (llama.LlamaConfig, llama.module_text)}
FAMILIES["bert"] = (bert.BertConfig, bert.module_text)


STEPS = (
    ("stop 22", dict(balance_sides=False, hold_planes_whole=True, one_plane_siblings=0)),
    ("balanced", dict(balance_sides=True, hold_planes_whole=True, one_plane_siblings=0)),
    ("+ holds", dict(balance_sides=True, hold_planes_whole=False, one_plane_siblings=0)),
    ("+ 1 plane", dict(balance_sides=True, hold_planes_whole=False, one_plane_siblings=4)),
)
DEFAULTS = {k: getattr(Lowering, k) for k in STEPS[-1][1]}


def cycles(family: str, size: dict, system: str, tp: int, pp: int, policy: dict) -> dict[str, int]:
    config, text = FAMILIES[family]
    m = parse(text(config(max_seq=16, **size)))
    for k, v in policy.items():
        setattr(Lowering, k, v)
    try:
        p = compile_module(m, named_system(system), None, tp=tp, pp=pp, timing_only=True)
    finally:
        for k, v in DEFAULTS.items():
            setattr(Lowering, k, v)
    return {e: p.length(e) for e in p.entries}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", action="store_true", help="also two stages of Llama-70B (about 4 minutes)")
    args = ap.parse_args()
    heads = " ".join(f"{name:>10}" for name, _ in STEPS)
    print(f"{'model':<52} {'entry':<8} {heads} {'new/old':>8}")
    for name, family, size, system, tp, pp in CONFIGS + ([BIG] if args.big else []):
        t = time.perf_counter()
        got = [cycles(family, size, system, tp, pp, policy) for _, policy in STEPS]
        for e in got[0]:
            cols = " ".join(f"{g[e]:>10,}" for g in got)
            print(f"{name:<52} {e:<8} {cols} {got[-1][e] / got[0][e]:>7.3f}x")
        print(f"{'':<52} ({len(STEPS)} compiles: {time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()

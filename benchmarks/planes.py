"""Matrix planes balanced by weight rows against sides taking turns: cycles of the same models.

    python benchmarks/planes.py [--big]

A matmul's blocks go to the two hemispheres' planes in turn. Before stop 23 the turns ran on from
matmul to matmul, so a layer whose matmuls have an even number of unequal blocks, or large and small
weights in turn, put more weight rows on one side every layer (Llama-70B's: up to 1.5x), and a
block of one column chunk always took plane 0 of its side (Llama-70B's plane 0s loaded 7x the
rows of the plane 1s). Now each matmul starts on the side that has loaded fewer rows
(`Lowering.start_sides`) and such a block takes its side's plane that has loaded fewer
(`Lowering.side`). Compiled timing-only both ways in this process (`Lowering.balance_sides`);
cycles are exact (no timing noise), so one run each. Prints prefill and decode (or encode) cycles
and the ratio new / old; with --big also two stages of Llama-70B in int8 on dragonfly:8 (tp=8,
about a minute per compile).
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


def cycles(family: str, size: dict, system: str, tp: int, pp: int, balance: bool) -> dict[str, int]:
    config, text = FAMILIES[family]
    m = parse(text(config(max_seq=16, **size)))
    Lowering.balance_sides = balance
    try:
        p = compile_module(m, named_system(system), None, tp=tp, pp=pp, timing_only=True)
    finally:
        Lowering.balance_sides = True
    return {e: p.length(e) for e in p.entries}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", action="store_true", help="also two stages of Llama-70B (about 2 minutes)")
    args = ap.parse_args()
    print(f"{'model':<52} {'entry':<8} {'turns':>9} {'balanced':>9} {'new/old':>8}")
    for name, family, size, system, tp, pp in CONFIGS + ([BIG] if args.big else []):
        t = time.perf_counter()
        old = cycles(family, size, system, tp, pp, False)
        new = cycles(family, size, system, tp, pp, True)
        for e in old:
            print(f"{name:<52} {e:<8} {old[e]:>9,} {new[e]:>9,} {new[e] / old[e]:>7.3f}x")
        name = ""
        print(f"{'':<52} (both compiles: {time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()

"""Transformers: emulation time per generated token against the numpy reference, and how compile
time grows with layers and chips.

    python benchmarks/transformers.py [--runs 3] [--small]

Per token: one emulated decode step (every value computed, every operand and link checked)
against one decode step of the numpy reference interpreter on the same module, state and
weights (medians of the runs' steps; the target is at most 2x). Toy widths (d 64, 128) fill a
fifth of the 320 lanes and the reference's numpy work is tiny; the GPT-2 rows at d 512 and 1024
show the ratio where the reference has real work. Compile time: medians of runs,
for a toy Llama with 2, 4 and 8 layers on one chip, and with 4 layers on 1, 2, 4 and 8 chips of
a node (tp x pp). Wall-clock seconds on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from compiler import parse
from compiler.backend import compile_module
from compiler.reference import Reference
from emulator.run import Emulator
from isa.system import named_system
from models.gpt2 import GPT2Config
from models.gpt2 import module_text as gpt2_text
from models.gpt2 import random_weights as gpt2_weights
from models.llama import LlamaConfig
from models.llama import module_text as llama_text
from models.llama import random_weights as llama_weights


def per_token(m, w, program, steps: int) -> tuple[float, float, int]:
    emu, ref = Emulator(program), Reference(m, w)
    max_seq = program.whole("input", "prefill")["ids"][1][0]
    ids = np.zeros(max_seq, np.int32)
    ids[:3] = [1, 2, 3]
    emu.run("prefill", {"ids": ids, "len": np.int32(3)})
    ref.run("prefill", {"ids": ids, "len": np.int32(3)})
    t_emu, t_ref, cycles = [], [], 0
    for k in range(steps):
        x = {"tok": np.array([k + 1], np.int32), "pos": np.int32(3 + k)}
        t0 = time.perf_counter()
        r = emu.run("decode", x)
        t1 = time.perf_counter()
        ref.run("decode", x)
        t2 = time.perf_counter()
        assert r.violations == []
        t_emu.append(t1 - t0)
        t_ref.append(t2 - t1)
        cycles = r.cycles
    return statistics.median(t_emu), statistics.median(t_ref), cycles


def compile_time(m, w, system, tp, pp, runs) -> tuple[float, object]:
    times, p = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        p = compile_module(m, system, w, tp=tp, pp=pp)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="only the toy models (the wide ones take minutes)")
    args = ap.parse_args()
    node = named_system("node")
    print("decode step: emulation (all checks) vs the numpy reference interpreter, median of steps")
    print(f"{'model':<34} {'tp':>3} {'pp':>3} {'cycles':>7} {'emulate s':>10} {'numpy s':>9} {'ratio':>7}")
    gpt2 = ("gpt2 2L d64 h4 v128 seq16", GPT2Config(2, 64, 4, 256, 128, 16), gpt2_text, gpt2_weights)
    llama = ("llama 2L d128 h8 kv2 seq32", LlamaConfig(2, 128, 8, 2, 256, 256, 32), llama_text, llama_weights)
    # llama with tp 2 (its 2 key/value heads split) and tp 4 (more chips than key/value heads:
    # the attention splits by head with copies, each pair of chips running one head)
    cases = [(*gpt2, 1, 1), (*gpt2, 2, 2), (*llama, 1, 1), (*llama, 2, 2), (*llama, 2, 4), (*llama, 4, 2)]
    if not args.small:  # wider models: the numpy reference's work grows, the emulator's overheads do not
        for d in (512, 1024):
            wide = (f"gpt2 2L d{d} h{d // 64} v256 seq16", GPT2Config(2, d, d // 64, 4 * d, 256, 16))
            cases.append((*wide, gpt2_text, gpt2_weights, 1, 1))
        cases.append((*wide, gpt2_text, gpt2_weights, 2, 2))
    for name, c, text, weights, tp, pp in cases:
        m, w = parse(text(c)), weights(c, 0)
        p = compile_module(m, node, w, tp=tp, pp=pp)
        emu_s, ref_s, cycles = per_token(m, w, p, max(3, args.runs))
        print(f"{name:<34} {tp:>3} {pp:>3} {cycles:>7} {emu_s:>10.4f} {ref_s:>9.4f} {emu_s / ref_s:>6.2f}x")

    print("\ncompile time, llama d128 h8 kv2 ffn256 vocab256 seq32 (median of runs)")
    print(f"{'layers':>6} {'tp':>3} {'pp':>3} {'instructions':>12} {'compile s':>10} {'vs first':>9}")
    base = None
    for layers, tp, pp in [(2, 1, 1), (4, 1, 1), (8, 1, 1), (4, 2, 1), (4, 2, 2), (4, 4, 2)]:
        c = LlamaConfig(layers, 128, 8, 2, 256, 256, 32)
        m, w = parse(llama_text(c)), llama_weights(c, 0)
        s, p = compile_time(m, w, node, tp, pp, args.runs)
        base = base or s
        print(f"{layers:>6} {tp:>3} {pp:>3} {len(p):>12} {s:>10.2f} {s / base:>8.1f}x")


if __name__ == "__main__":
    main()

"""Many chips: one transformer block (attention + MLP) on 1, 2, 4 and 8 chips of a node.

    python benchmarks/many_chips.py [--runs 3] [--seq 32]

For each chip count and each split (all tensor parallel, all pipeline, and the best the
search finds): total cycles of the schedule, the cycles in which a vector is on a link and
no chip computes anything else ("link wait"), vectors over links, the speed-up over one
chip (cycles), and the compile time (median of runs) with its growth over one chip. Every
program is emulated once and checked against the reference, with zero violations
required. The machine is shared and noisy: read the medians and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

from compiler import parse
from compiler.backend import compile_module
from emulator.run import Emulator
from isa.system import named_system
from lpu.api import check_link_schedule, check_outputs, link_vectors, link_wait_cycles
from lpu.arrays import random_inputs, random_weights


def block(seq: int, d: int = 640, heads: int = 8, ffn: int = 1280) -> str:
    dh = d // heads
    return f"""module block
param @ln1_g : f16[{d}]
param @ln1_b : f16[{d}]
param @wq : f16[{d}, {d}]
param @wk : f16[{d}, {d}]
param @wv : f16[{d}, {d}]
param @wo : f16[{d}, {d}]
param @ln2_g : f16[{d}]
param @ln2_b : f16[{d}]
param @w1 : f16[{d}, {ffn}]
param @w2 : f16[{ffn}, {d}]
graph main(%x: f16[{seq}, {d}]) -> (f16[{seq}, {d}]) {{
  %h = layernorm(%x, @ln1_g, @ln1_b)
  %q = matmul(%h, @wq)
  %k = matmul(%h, @wk)
  %v = matmul(%h, @wv)
  %q4 = reshape(%q) : f16[{seq}, {heads}, {dh}]
  %qh = transpose(%q4) {{perm = [1, 0, 2]}}
  %k4 = reshape(%k) : f16[{seq}, {heads}, {dh}]
  %kt = transpose(%k4) {{perm = [1, 2, 0]}}
  %v4 = reshape(%v) : f16[{seq}, {heads}, {dh}]
  %vh = transpose(%v4) {{perm = [1, 0, 2]}}
  %s = matmul(%qh, %kt)
  %scale = constant() {{value = {1 / dh**0.5}}} : f16[]
  %ss = mul(%s, %scale)
  %p = softmax(%ss) {{axis = -1}}
  %o = matmul(%p, %vh)
  %ot = transpose(%o) {{perm = [1, 0, 2]}}
  %o2 = reshape(%ot) : f16[{seq}, {d}]
  %a = matmul(%o2, @wo)
  %x1 = add(%x, %a)
  %h2 = layernorm(%x1, @ln2_g, @ln2_b)
  %f = matmul(%h2, @w1)
  %g = gelu(%f)
  %m = matmul(%g, @w2)
  %y = add(%x1, %m)
  return %y
}}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seq", type=int, default=32)
    args = ap.parse_args()
    m = parse(block(args.seq))
    w = random_weights(m, 0)
    inputs = random_inputs(m, m.graphs[0], 0)
    system = named_system("node")
    print(f"one transformer block (d=640, 8 heads, ffn=1280, {args.seq} tokens, f16) on a node of tsp chips")
    print(
        f"link: {system.link_latency_cycles} cycles latency, {system.link_cycles_per_vector} cycles per "
        f"vector; compile time: median of {args.runs}"
    )
    print(
        f"{'chips':>5} {'tp':>3} {'pp':>3} {'cycles':>8} {'link wait':>10} {'vectors':>8} "
        f"{'speed-up':>9} {'compile s':>10} {'vs 1 chip':>10}"
    )
    base_cycles = base_compile = None
    for chips in (1, 2, 4, 8):
        splits = sorted({(chips, 1), (1, chips)} | ({(2, chips // 2)} if chips >= 4 else set()))
        for tp, pp in splits:
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                p = compile_module(m, system, w, tp=tp, pp=pp)
                times.append(time.perf_counter() - t0)
            compile_s = statistics.median(times)
            run = Emulator(p).run("main", inputs)
            assert run.violations == [], run.violations[0].render()
            assert check_outputs(p, "main", inputs, run.outputs).ok
            assert check_link_schedule(p) == []
            cycles = p.length()
            if base_cycles is None:
                base_cycles, base_compile = cycles, compile_s
            print(
                f"{chips:>5} {tp:>3} {pp:>3} {cycles:>8} {link_wait_cycles(p):>10} {len(link_vectors(p)):>8} "
                f"{base_cycles / cycles:>8.2f}x {compile_s:>10.3f} {compile_s / base_compile:>9.1f}x"
            )


if __name__ == "__main__":
    main()

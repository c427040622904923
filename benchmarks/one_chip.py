"""One chip: compile time, emulation time and simulated cycles, as ratios against numpy.

    python benchmarks/one_chip.py [--runs 5]

For each case: compile (median of runs), emulate with every value computed and every read
checked (median of runs after one warm-up that also fills numba's cache), the numpy
reference on the same data (median), the simulated cycles, the emulation/numpy time
ratio and simulated cycles per wall-clock second. The machine is shared and noisy:
read the medians, and the ratios rather than the seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

from compiler import parse
from compiler.backend import compile_module
from compiler.reference import Reference
from emulator.run import Emulator
from isa.system import named_system
from lpu.arrays import random_inputs, random_weights

GEMM = """module gemm
param @b : f16[512, 512]
graph main(%a: f16[512, 512]) -> (f16[512, 512]) {
  %c = matmul(%a, @b)
  return %c
}
"""

MLP = """module mlp
param @w1 : f16[256, 1024]
param @b1 : f16[1024]
param @w2 : f16[1024, 256]
graph main(%x: f16[8, 256]) -> (f16[8, 256]) {
  %h = matmul(%x, @w1)
  %hb = add(%h, @b1)
  %a = gelu(%hb)
  %y = matmul(%a, @w2)
  return %y
}
"""


def median_time(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(
        f"{'case':<22} {'instr':>6} {'cycles':>7} {'compile s':>10} {'emulate s':>10} {'numpy s':>9} "
        f"{'emu/numpy':>10} {'cycles/s':>10} {'violations':>10}"
    )
    for name, text, system in (("512x512x512 GEMM f16", GEMM, "tsp"), ("MLP 8x256x1024 f16", MLP, "tsp")):
        m = parse(text)
        w = random_weights(m, 0)
        x = random_inputs(m, m.graphs[0], 0)
        t_compile, program = median_time(lambda: compile_module(m, named_system(system), w), args.runs)
        emu = Emulator(program)
        emu.run("main", x)  # warm-up: numba's cache
        t_emu, result = median_time(lambda: emu.run("main", x), args.runs)
        ref = Reference(m, w)
        t_ref, _ = median_time(lambda: ref.run("main", x), args.runs)
        print(
            f"{name:<22} {len(program):>6} {result.cycles:>7} {t_compile:>10.3f} {t_emu:>10.3f} "
            f"{t_ref:>9.4f} "
            f"{t_emu / t_ref:>10.1f} {result.cycles / t_emu:>10.0f} {len(result.violations):>10}"
        )
    print(
        "For scale (issue 4): SCALE-Sim v3 takes 10-20 s for a 512^3 GEMM without values; the C++ "
        "FTLPU model runs about 2,500-20,000 cycles/s on an FFN block."
    )


if __name__ == "__main__":
    main()

"""Views of a program: how the report, the trace and the instruction table scale with its size.

    python benchmarks/views.py [--runs 3]

Programs of growing size (a toy Llama of 2, 4 and 8 layers on a node, one stage per layer, and
the GPT block on one chip), compiled once. For each: instructions, the time to load the program
file (the baseline), and the time of `lpu.report` (lower bound and critical path included), of
the trace (built and serialised to JSON) and of the instruction table, each as a ratio to the
load and per thousand instructions. Medians of runs; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from compiler import parse
from compiler.backend import compile_module
from isa.program import load, save
from isa.system import named_system
from lpu.report import report
from lpu.table import instructions
from lpu.trace import trace_events
from models.llama import LlamaConfig, module_text


def programs():
    here = os.path.dirname(os.path.abspath(__file__))
    gpt = os.path.join(here, "..", "examples", "gpt_block.lpu")
    yield "gpt block, 1 chip", compile_module(parse(open(gpt).read(), gpt), named_system("tsp"), None)
    for layers in (2, 4, 8):
        c = LlamaConfig(layers=layers, d_model=64, heads=4, kv_heads=2, ffn=128, vocab=128, max_seq=8)
        p = compile_module(
            parse(module_text(c)), named_system("node"), None, tp=1, pp=layers, timing_only=True
        )
        yield f"llama {layers} layers, {layers} chips", p


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--program", metavar="PROG.lpuprog", help="measure this program file instead (one run)")
    args = ap.parse_args()
    if args.program:
        t = time.perf_counter()
        p = load(args.program)
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        r = report(p)
        t_report = time.perf_counter() - t
        t = time.perf_counter()
        events = trace_events(p)
        t_trace = time.perf_counter() - t
        stored = f" ({len(p)} stored)" if len(p.repeats) else ""
        n = p.instructions()
        print(
            f"{args.program}: {n} instructions{stored} on {r.chips} chips; load {t_load:.1f} s, "
            f"report {t_report:.1f} s ({1e6 * t_report / n:.1f} us per instruction; bound ratio "
            f"{r.bound_ratio:.2f}, {r.binding_bound}), trace {len(events['traceEvents'])} events built in "
            f"{t_trace:.1f} s"
        )
        return
    print(
        f"{'program':<26} {'instr':>7} {'load s':>7} {'report s':>8} {'x load':>6} {'trace s':>7} "
        f"{'x load':>6} {'table s':>7} {'x load':>6} {'report ms/1k':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, p in programs():
            path = os.path.join(tmp, "p.lpuprog")
            save(p, path)
            t_load = median_time(lambda: load(path), args.runs)
            t_report = median_time(lambda: report(p), args.runs)
            t_trace = median_time(lambda: json.dumps(trace_events(p)), args.runs)
            t_table = median_time(lambda: instructions(p), args.runs)
            print(
                f"{name:<26} {len(p):>7} {t_load:>7.3f} {t_report:>8.3f} {t_report / t_load:>5.1f}x "
                f"{t_trace:>7.3f} {t_trace / t_load:>5.1f}x {t_table:>7.3f} {t_table / t_load:>5.1f}x "
                f"{1000 * t_report / len(p) * 1000:>12.3f}"
            )


if __name__ == "__main__":
    main()

"""Fuzzing: campaign throughput, a parser campaign of many thousands of inputs, the mutation kill
rate found by `lpu fuzz --mutate`.

    python benchmarks/fuzz.py [--runs 3] [--parser-inputs 20000]

Throughput: cases per second of a seeded 200-case differential campaign on the `tiny` preset
and on random small chips (compile + emulate + compare with the reference), median of runs,
with the numpy reference's share of a case as the baseline (the time to evaluate the same
modules with the reference interpreter alone). Parser: random and mutated `.lpu` texts, each
accepted or refused with an LpuError; any other exception is a traceback a user would see
(must be 0). Mutation: a seeded campaign of random modules with 20 mutations each.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler import parse  # noqa: E402
from compiler.reference import Reference  # noqa: E402
from isa.diagnostics import LpuError  # noqa: E402
from isa.system import named_system  # noqa: E402
from lpu import fuzz  # noqa: E402
from lpu.arrays import random_inputs, random_weights  # noqa: E402


def throughput(system, runs: int) -> tuple[float, float, int]:
    rates, ref_share = [], []
    cases = 0
    for r in range(runs):
        t = time.perf_counter()
        out = fuzz.campaign(200, seed=100 + r, system=system)
        took = time.perf_counter() - t
        assert out.failures == [], out.failures[0][1]
        rates.append(out.cases / took)
        cases = out.cases
        # baseline: the reference interpreter alone on the same kind of modules
        from hypothesis import HealthCheck, given, settings
        from hypothesis import seed as hseed

        spent = [0.0]

        @hseed(100 + r)
        @settings(max_examples=50, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @given(fuzz.case_strategy(system))
        def ref(case):
            t0 = time.perf_counter()
            w = random_weights(case.module, case.seed)
            for g in case.module.graphs:
                try:
                    Reference(case.module, w).run(g.name, random_inputs(case.module, g, case.seed))
                except LpuError:
                    continue  # ids out of range: refused, as the campaign skips them too
            spent[0] += time.perf_counter() - t0

        ref()
        ref_share.append(50 / max(spent[0], 1e-9))
    return statistics.median(rates), statistics.median(ref_share), cases


def mutated(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        if not text:
            break
        k = rng.randrange(len(text))
        edit = rng.choice("drics")
        if edit == "d":
            text = text[:k] + text[k + rng.randint(1, 8) :]
        elif edit == "r":
            text = text[:k] + chr(rng.randrange(1, 0x2FF)) + text[k + 1 :]
        elif edit == "i":
            text = text[:k] + rng.choice(["%", "@", "{", "}", "[", "]", ":", "-1", "9" * 30, "\n"]) + text[k:]
        elif edit == "c":
            text = text[:k]
        else:
            text = text[:k] + text[k : k + 30] + text[k:]
    return text


def parser_campaign(count: int) -> tuple[int, int, int, float]:
    seeds = [p.read_text() for p in (ROOT / "examples").glob("*.lpu")] + [
        p.read_text() for p in (ROOT / "tests" / "ir").glob("*.lpu")
    ]
    rng = random.Random(0)
    ok = refused = crashed = 0
    t = time.perf_counter()
    for k in range(count):
        if k % 4 == 0:
            text = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))).decode("latin-1")
        else:
            text = mutated(rng.choice(seeds), rng)
        try:
            parse(text, "fuzz.lpu")
            ok += 1
        except LpuError:
            refused += 1
        except Exception as e:  # noqa: BLE001
            crashed += 1
            print(f"  traceback: {type(e).__name__}: {e}", file=sys.stderr)
    return ok, refused, crashed, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parser-inputs", type=int, default=20000)
    args = ap.parse_args()
    for name, system in (("tiny preset", named_system("tiny")), ("random chips", None)):
        rate, ref_rate, cases = throughput(system, args.runs)
        print(
            f"differential, {name}: {rate:.1f} cases/s (median of {args.runs} x {cases} cases); the "
            f"reference interpreter alone does {ref_rate:.0f} cases/s, so a checked case costs "
            f"{ref_rate / rate:.1f}x it"
        )
    ok, refused, crashed, took = parser_campaign(args.parser_inputs)
    print(
        f"parser: {args.parser_inputs} random and mutated inputs in {took:.1f} s: {ok} accepted, "
        f"{refused} refused with a located error, {crashed} tracebacks"
    )
    t = time.perf_counter()
    out = fuzz.campaign(40, seed=9, system=named_system("tiny"), mutate=20)
    print(
        f"mutation: {out.cases} programs x 20 mutants = {out.mutants}: {out.caught_timing} caught by "
        f"timing, {out.caught_values} by values, {out.equivalent} equivalent, {len(out.survivors)} "
        f"survived; kill rate {out.kill_rate:.4f} ({time.perf_counter() - t:.1f} s)"
    )


if __name__ == "__main__":
    main()

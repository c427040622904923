"""Mutation kill rate of the emulator's checks on compiled programs.

    python benchmarks/mutation.py [--count N]

For each program: N random single mutations (issue cycle +-1..3, a stream field, an
address by one vector; on many chips ("tiny4": four tiny chips in a ring, tp x pp) also a
send or receive moved or re-targeted to another link); each is caught by a timing
violation, caught only by different outputs, recognised as equivalent (every read still
sees the same producer's vector), or survives (a checker bug: printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_mutation import campaign, program_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=400)
    args = ap.parse_args()
    cases = [
        ("small MLP", "mlp", "tiny", 1, 1),
        ("GPT block", "gpt_block", "tsp", 1, 1),
        ("KV decode", "kv_decode", "tiny", 1, 1),
        ("MLP 2x2", "mlp", "tiny4", 2, 2),
        ("GPT 4x1", "gpt_block", "tiny4", 4, 1),
    ]
    print(
        f"{'program':<12} {'system':<6} {'instr':>6} {'mutants':>8} {'timing':>7} {'values':>7} "
        f"{'equiv':>6} {'survive':>8} {'kill rate':>10} {'s':>6}"
    )
    for name, source, system, tp, pp in cases:
        p, inputs, entry = program_for(source, system, tp, pp)
        t0 = time.perf_counter()
        timing, values, equivalent, survivors = campaign(p, inputs, args.count, seed=1, entry=entry)
        dt = time.perf_counter() - t0
        killable = args.count - equivalent
        rate = (timing + values) / killable if killable else 1.0
        print(
            f"{name:<12} {system:<6} {len(p):>6} {args.count:>8} {timing:>7} {values:>7} {equivalent:>6} "
            f"{len(survivors):>8} {rate:>10.4f} {dt:>6.1f}"
        )
        for s in survivors:
            print(f"  survivor: {s}")


if __name__ == "__main__":
    main()

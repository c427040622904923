"""Fuzzing campaigns: random modules compiled, emulated and compared with the reference (and, with
`mutate`, random single mutations of the compiled programs that the checks must catch).

A case is a module from `lpu.strategies.modules` on a chip (random small chips from
`lpu.strategies.chips`, or the chips of a named system with a random (tp, pp) split), with
seeded weights and inputs. It passes when it compiles (or is refused for a documented limit:
SRAM, one MEM slice, streams), emulates with no timing violation, and every output matches the
reference interpreter within the stated tolerances. Anything else fails, including an exception
from our own code (a bug, not the user's).

Campaigns run in rounds of hypothesis searches with seeds derived from the campaign's seed, so
the same seed gives the same cases; a failing case is shrunk by hypothesis and written out as a
`.lpu` file (and a system file for a random chip) with the command that replays it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field

from compiler.backend import compile_module
from compiler.ir import Module
from compiler.printer import print_module
from compiler.reference import Reference
from emulator.run import Emulator
from isa.chip import CHIP_KEYS, TINY
from isa.diagnostics import LpuError
from isa.system import SystemConfig
from lpu.api import check_outputs
from lpu.arrays import random_inputs, random_weights

ROUND = 50  # examples per hypothesis search
# refusals that are documented limits, not bugs (a random module may well exceed a tiny chip)
LIMITS = ("does not fit in SRAM", "one MEM slice holds", "streams flowing the same way", "possible offsets")


@dataclass
class Case:
    module: Module
    system: SystemConfig
    tp: int = 1
    pp: int = 1
    seed: int = 0


@dataclass
class Outcome:
    cases: int = 0
    failures: list[tuple[Case, str]] = field(default_factory=list)
    # mutation campaigns
    mutants: int = 0
    caught_timing: int = 0
    caught_values: int = 0
    equivalent: int = 0
    survivors: list[tuple[Case, str]] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, a + b)

    @property
    def kill_rate(self) -> float | None:
        live = self.mutants - self.equivalent
        return (self.caught_timing + self.caught_values) / live if live else None


class _Failed(Exception):
    """Raised inside a hypothesis search so that it shrinks the failing case."""


def check_case(case: Case) -> str | None:
    """None when the case passes (or is refused for a documented limit), else what went wrong."""
    m = case.module
    try:
        w = random_weights(m, case.seed)
        try:
            program = compile_module(m, case.system, w, tp=case.tp, pp=case.pp)
        except LpuError as e:
            text = e.diagnostics[0].message
            return None if any(s in text for s in LIMITS) else f"compile refused the module: {text}"
        for g in m.graphs:
            inputs = random_inputs(m, g, case.seed)
            try:
                Reference(m, w).run(g.name, inputs)
            except LpuError:
                continue  # ids or offsets out of range: the reference refuses them too
            run = Emulator(program).run(g.name, inputs)
            if run.violations:
                first = run.violations[0].render()
                return f"{g.name}: {len(run.violations)} timing violations, the first: {first}"
            report = check_outputs(program, g.name, inputs, run.outputs)
            if not report.ok:
                return f"{g.name}: outputs differ from the reference: {'; '.join(report.lines)}"
    except Exception as e:  # noqa: BLE001  a crash in our code is exactly what fuzzing is for
        return f"internal error: {type(e).__name__}: {e}"
    return None


def case_strategy(system: SystemConfig | None, max_ops: int = 6):
    """Cases: a module on a random small chip (system None), or on `system` with a random split."""
    from hypothesis import strategies as st

    from lpu.strategies import CHIP_OPS, chips, modules, splits, systems_of

    mods = modules(max_ops=max_ops, ops=CHIP_OPS, max_graphs=1)
    seeds = st.integers(0, 3)
    if system is None:
        return st.builds(lambda m, c, s: Case(m, systems_of(c), 1, 1, s), mods, chips(), seeds)
    if system.chips == 1:
        return st.builds(lambda m, s: Case(m, system, 1, 1, s), mods, seeds)
    return st.builds(lambda m, split, s: Case(m, system, split[0], split[1], s), mods, splits(system), seeds)


def _lanes_moved_at_run_time(m: Module) -> bool:
    return any(
        op.name == "update_slice" and op.attr("axis") % op.result.type.rank == op.result.type.rank - 1
        for g in m.graphs
        for op in g.ops
    )


def run_round(seed: int, examples: int, system: SystemConfig | None, mutate: int = 0) -> Outcome:
    """One hypothesis search of `examples` cases; a failure is shrunk and the search stops."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    out = Outcome()
    last: dict = {}

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case_strategy(system))
    def body(case: Case) -> None:
        if _lanes_moved_at_run_time(case.module):  # not compiled yet (a documented limit)
            return
        if mutate:
            _mutation_case(case, mutate, out, last)
            return
        problem = check_case(case)
        last["count"] = last.get("count", 0) + 1
        if problem is not None:
            last["failure"] = (case, problem)
            raise _Failed(problem)

    try:
        body()
    except _Failed:
        out.failures.append(last["failure"])
    out.cases = last.get("count", 0) if not mutate else last.get("cases", 0)
    return out


def _mutation_case(case: Case, count: int, out: Outcome, last: dict) -> None:
    from lpu.mutate import campaign

    m = case.module
    w = random_weights(m, case.seed)
    try:
        program = compile_module(m, case.system, w, tp=case.tp, pp=case.pp)
    except LpuError:
        return
    g = m.graphs[0]
    inputs = random_inputs(m, g, case.seed)
    try:
        Reference(m, w).run(g.name, inputs)
    except LpuError:
        return
    if Emulator(program).run(g.name, inputs).violations or len(program) == 0:
        return
    last["cases"] = last.get("cases", 0) + 1
    timing, values, equivalent, survivors = campaign(program, inputs, count, case.seed, g.name)
    out.mutants += timing + values + equivalent + len(survivors)
    out.caught_timing += timing
    out.caught_values += values
    out.equivalent += equivalent
    out.survivors += [(case, what) for what in survivors]


def _worker(args) -> Outcome:
    rounds, system, mutate, deadline = args
    total = Outcome()
    for s, count in rounds:
        if deadline is not None and time.monotonic() > deadline:
            break
        total.add(run_round(s, count, system, mutate))
        if total.failures:
            break
    return total


def campaign(
    examples: int,
    seed: int = 0,
    system: SystemConfig | None = None,
    jobs: int = 1,
    time_budget: float | None = None,
    mutate: int = 0,
    progress=None,
) -> Outcome:
    """Run rounds of `ROUND` cases until `examples` cases (or the time budget) are done, or a case
    fails. Round r searches with seed `seed * 1_000_003 + r`: the same seed, the same cases."""
    n = max(1, -(-examples // ROUND))
    rounds = [(seed * 1_000_003 + r, min(ROUND, examples - r * ROUND)) for r in range(n)]
    deadline = time.monotonic() + time_budget if time_budget else None
    total = Outcome()
    if jobs <= 1:
        for k, (s, count) in enumerate(rounds):
            if deadline is not None and time.monotonic() > deadline:
                break
            total.add(run_round(s, count, system, mutate))
            if progress:
                progress(k + 1, n, total)
            if total.failures:
                break
        return total
    import multiprocessing

    work = [(rounds[j::jobs], system, mutate, deadline) for j in range(jobs)]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for k, part in enumerate(pool.imap_unordered(_worker, work)):
            total.add(part)
            if progress:
                progress(k + 1, jobs, total)
    return total


def system_file_text(system: SystemConfig) -> str:
    """A system TOML file for a one-chip system of a random chip (the keys that differ from tiny)."""
    lines = ["[chip]", 'preset = "tiny"']
    for key in CHIP_KEYS:
        v = getattr(system.chip, key)
        if v != getattr(TINY, key):
            lines.append(f"{key} = {v!r}" if not isinstance(v, str) else f'{key} = "{v}"')
    lines += ["", "[system]", f'name = "{system.name}"', f"chips = {system.chips}", ""]
    return "\n".join(lines)


def write_case(case: Case, directory: str, stem: str, why: str) -> tuple[str, str]:
    """Write a failing case as STEM.lpu (plus STEM.toml for a random chip); returns (path, command)."""
    from isa.files import write_atomically
    from isa.system import named_system

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{stem}.lpu")
    header = "".join(f"# {line}\n" for line in why.splitlines()[:20])
    text = header + print_module(case.module)
    write_atomically(path, lambda f: f.write(text.encode()))
    try:
        system_arg = case.system.name if named_system(case.system.name) == case.system else None
    except LpuError:
        system_arg = None
    if system_arg is None:
        system_arg = os.path.join(directory, f"{stem}.toml")
        toml = system_file_text(case.system)
        write_atomically(system_arg, lambda f: f.write(toml.encode()))
    split = f" --tp {case.tp} --pp {case.pp}" if case.system.chips > 1 else ""
    return path, f"lpu fuzz --replay {path} --system {system_arg}{split} --seed {case.seed}"


def replay(path: str, system: SystemConfig, tp: int, pp: int, seed: int) -> str | None:
    from compiler import parse_file

    return check_case(Case(parse_file(path), system, tp, pp, seed))


def report_progress(done: int, total: int, outcome: Outcome, started: float) -> None:
    if not sys.stderr.isatty():
        return
    rate = outcome.cases / max(time.monotonic() - started, 1e-9)
    print(
        f"\rfuzz: {done}/{total} rounds, {outcome.cases} cases, {len(outcome.failures)} failures, "
        f"{rate:.0f} cases/s",
        end="",
        file=sys.stderr,
        flush=True,
    )

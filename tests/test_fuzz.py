"""lpu fuzz: seeded differential campaigns, shrunk failing cases written out with the command that
replays them, mutation campaigns with their kill rate."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compiler import parse_file
from compiler.reference import Reference
from emulator.run import Emulator
from isa.diagnostics import LpuError
from isa.system import load_system, named_system
from lpu import fuzz
from lpu.arrays import random_inputs
from lpu.cli import main
from lpu.strategies import compiled, mutations


def test_a_seeded_campaign_of_200_cases_on_tiny_passes():
    out = fuzz.campaign(200, seed=0, system=named_system("tiny"))
    assert out.failures == []
    assert out.cases >= 150  # a few cases move lanes by a run-time amount, which is not compiled yet
    again = fuzz.campaign(200, seed=0, system=named_system("tiny"))
    assert again.cases == out.cases  # the same seed, the same cases


def test_jobs_split_the_same_rounds():
    one = fuzz.campaign(100, seed=4, jobs=1)
    two = fuzz.campaign(100, seed=4, jobs=2)
    assert one.failures == two.failures == [] and one.cases == two.cases


def fails_on_exp(case: fuzz.Case) -> str | None:
    """A stand-in for a bug: every module with an `exp` fails."""
    ops = [op.name for g in case.module.graphs for op in g.ops]
    return "exp is broken" if "exp" in ops else None


def test_a_failure_is_shrunk_and_written_with_the_command_that_replays_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fuzz, "check_case", fails_on_exp)
    out = fuzz.campaign(300, seed=1)
    assert len(out.failures) == 1
    case, problem = out.failures[0]
    assert problem == "exp is broken"
    ops = [op.name for g in case.module.graphs for op in g.ops]
    assert "exp" in ops and len(ops) <= 2, ops  # shrunk to (nearly) the exp alone
    assert case.system.chip.lanes == 16  # and to the smallest chip
    assert main(["fuzz", "--examples", "300", "--seed", "1", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "failed: exp is broken" in err and "reproduce: lpu fuzz --replay" in err
    written = sorted(os.listdir(tmp_path))
    assert written == ["failure-1-0.lpu", "failure-1-0.toml"]
    m = parse_file(str(tmp_path / "failure-1-0.lpu"))  # the case is a valid module again
    assert "exp" in [op.name for g in m.graphs for op in g.ops]
    assert load_system(str(tmp_path / "failure-1-0.toml")).chip == case.system.chip
    monkeypatch.undo()
    # replayed with the real checks, the case passes (exp is not broken)
    command = err.split("reproduce: ")[1].split()
    assert command[:3] == ["lpu", "fuzz", "--replay"]
    assert main(command[1:]) == 0
    assert "passes" in capsys.readouterr().out


def test_mutation_campaign_reports_a_kill_rate():
    out = fuzz.campaign(8, seed=3, system=named_system("tiny"), mutate=10)
    assert out.cases >= 4 and out.mutants == 10 * out.cases
    assert out.survivors == []
    assert out.kill_rate == 1.0
    assert out.caught_timing + out.caught_values + out.equivalent == out.mutants


@pytest.mark.parametrize(
    "args, message",
    [
        (["--examples", "0"], "--examples must be at least 1"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--mutate", "0"], "--mutate must be at least 1"),
        (["--replay", "x.lpu"], "--replay needs the case's --system"),
    ],
)
def test_fuzz_refuses_bad_flags(args, message, capsys):
    assert main(["fuzz", *args]) == 1
    assert message in capsys.readouterr().err


def test_cli_fuzz_passes_and_says_how_fast(capsys):
    assert main(["fuzz", "--examples", "40", "--seed", "5", "--system", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fuzz: ") and "cases/s" in out and "0 failed" in out


@settings(max_examples=15, deadline=None)
@given(compiled(system=named_system("tiny")), st.data())
def test_property_public_strategies_give_runnable_programs_and_real_mutations(case, data):
    program, m, w = case
    g = m.graphs[0]
    inputs = random_inputs(m, g, 0)
    try:
        Reference(m, w).run(g.name, inputs)
    except LpuError:
        assume(False)
    assert Emulator(program).run(g.name, inputs).violations == []
    what, mutant = data.draw(mutations(program))
    changed = ~np.all(mutant.fields == program.fields, axis=1) | (mutant.cycle != program.cycle)
    assert changed.sum() == 1, what  # exactly one instruction differs

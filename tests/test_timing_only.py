"""Timing-only compilation: alike pipeline stages are searched once, and the program is exactly the
one a full compile (every stage searched) gives."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import parse
from compiler.backend import compile_module
from compiler.decompose import decompose
from compiler.partition import balanced_cuts, layer_boundaries
from isa.diagnostics import LpuError
from isa.system import named_system
from lpu.api import generate_on_emulator, generate_on_reference
from lpu.cli import main
from models import FAMILIES
from models.gpt2 import GPT2Config
from models.llama import LlamaConfig

TABLES = ("entry", "chip", "queue", "cycle", "opcode", "n", "fields", "src", "src_off", "src_step", "maps")


def module_of(family: str, config):
    return parse(FAMILIES[family][0].module_text(config), f"{family}.lpu")


def llama(layers: int, d: int = 32, max_seq: int = 8) -> LlamaConfig:
    return LlamaConfig(layers=layers, d_model=d, heads=4, kv_heads=2, ffn=2 * d, vocab=64, max_seq=max_seq)


def assert_same_program(full, fast) -> None:
    for name in TABLES:
        assert np.array_equal(getattr(full, name), getattr(fast, name)), name
    assert full.placements == fast.placements
    assert full.length() == fast.length()


@pytest.mark.parametrize(
    "family, config, system, tp, pp",
    [
        ("llama", llama(6), "node", 1, 6),
        ("llama", llama(4), "node", 2, 4),
        ("gpt2", GPT2Config(layers=5, d_model=32, heads=4, ffn=64, vocab=64, max_seq=8), "ring:8", 1, 5),
        ("llama", llama(3), "node", 2, 1),
    ],
)
def test_timing_only_is_the_full_schedule(family, config, system, tp, pp):
    m = module_of(family, config)
    full = compile_module(m, named_system(system), None, tp=tp, pp=pp)
    fast = compile_module(m, named_system(system), None, tp=tp, pp=pp, timing_only=True)
    assert_same_program(full, fast)
    memo = fast.meta["timing_only"]
    blocks = memo["stage_blocks_searched"] + memo["stage_blocks_reused"]
    assert blocks == len(fast.entries) * pp
    assert "timing_only" not in full.meta


def test_repeated_layers_are_searched_once_per_kind_of_stage():
    """8 layers on 8 stages of a node: the first, second and last stages differ (embedding, the
    hand-off from it, the head); every other middle stage is placed like the one before it."""
    m = module_of("llama", llama(8))
    p = compile_module(m, named_system("node"), None, tp=1, pp=8, timing_only=True)
    memo = p.meta["timing_only"]
    assert memo["stage_blocks_reused"] >= 2 * 4, memo  # per entry at least stages 3..6
    assert memo["stage_blocks_searched"] + memo["stage_blocks_reused"] == 16


def test_a_timing_only_program_runs_with_weights_and_matches_numpy():
    """The same program: given weights at run time it generates what the reference does, with every
    operand checked."""
    config = llama(6)
    m = module_of("llama", config)
    p = compile_module(m, named_system("node"), None, tp=1, pp=6, timing_only=True)
    w = FAMILIES["llama"][0].random_weights(config, 3)
    got = generate_on_emulator(p, [3, 1, 4], 3, w)
    assert got.violations == []
    assert got.ids == generate_on_reference(p, [3, 1, 4], 3, w)


@settings(max_examples=4, deadline=None)
@given(layers=st.integers(2, 5), tp=st.sampled_from([1, 2]), data=st.data())
def test_property_timing_only_equals_full(layers, tp, data):
    pp = data.draw(st.integers(1, min(layers, 8 // tp)), label="pp")
    m = module_of("llama", llama(layers, d=16, max_seq=4))
    full = compile_module(m, named_system("node"), None, tp=tp, pp=pp)
    fast = compile_module(m, named_system("node"), None, tp=tp, pp=pp, timing_only=True)
    assert_same_program(full, fast)


def test_report_of_a_timing_only_program_says_what_was_reused():
    from lpu.report import render, report

    p = compile_module(module_of("llama", llama(8)), named_system("node"), None, tp=1, pp=8, timing_only=True)
    r = report(p)
    assert r.chips == 8 and r.latency_per_token_s > 0 and len(r.sram_per_chip) == 8
    assert r.timing_only == p.meta["timing_only"]
    assert "stage blocks searched" in render(r)


def test_timing_only_takes_no_weights():
    m = module_of("llama", llama(2))
    with pytest.raises(LpuError, match="takes no weights"):
        compile_module(m, named_system("node"), {}, tp=1, pp=2, timing_only=True)


def test_layer_boundaries_are_the_starts_of_the_layers():
    for layers in (2, 5):
        m = decompose(module_of("llama", llama(layers)))
        for g in m.graphs:
            cuts = sorted(layer_boundaries(list(g.ops)))
            assert len(cuts) == layers + 1, (g.name, cuts)
            gaps = set(np.diff(cuts).tolist())
            assert len(gaps) == 1, gaps  # one period: the layer
            # every layer begins with the same op: the first norm's square
            assert len({g.ops[c].name for c in cuts[:-1]}) == 1


def test_nothing_repeats_in_an_mlp():
    m = decompose(parse((ROOT / "examples" / "mlp.lpu").read_text()))
    assert layer_boundaries(list(m.graphs[0].ops)) is None


@settings(max_examples=60, deadline=None)
@given(
    cost=st.lists(st.integers(0, 9), min_size=3, max_size=9),
    pp=st.integers(1, 4),
    data=st.data(),
)
def test_property_balanced_cuts_minimise_the_costliest_stage(cost, pp, data):
    n = len(cost)
    allowed = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=n - 1), label="allowed"))
    params = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n), label="params")
    budget = data.draw(st.integers(0, 12), label="budget")
    got = balanced_cuts([float(c) for c in cost], [float(p) for p in params], allowed, pp, budget)

    def stages(starts):
        bounds = [0, *starts, n]
        return [(sum(cost[a:b]), sum(params[a:b])) for a, b in zip(bounds, bounds[1:])]

    feasible = [
        max(c for c, _ in stages(list(starts)))
        for starts in itertools.combinations(allowed, pp - 1)
        if all(p <= budget for _, p in stages(list(starts)))
    ]
    if not feasible:
        assert got is None
        return
    assert got is not None and len(got) == pp - 1 and all(c in allowed for c in got)
    assert all(p <= budget for _, p in stages(got))
    assert max(c for c, _ in stages(got)) == min(feasible)


def test_cli_timing_only(tmp_path, capsys):
    model = tmp_path / "l.lpu"
    assert main(["model", "llama", "--layers", "4", "--d-model", "32", "--heads", "4", "--vocab", "64",
                 "--max-seq", "8", "-o", str(model)]) == 0  # fmt: skip
    prog = tmp_path / "l.lpuprog"
    args = ["compile", str(model), "--system", "node", "--tp", "1", "--pp", "4", "-o", str(prog)]
    assert main(args + ["--timing-only"]) == 0
    out = capsys.readouterr().out
    assert "timing-only: " in out and "stage blocks searched" in out
    assert main(["run", str(prog), "--entry", "decode"]) == 0
    out = capsys.readouterr().out
    assert "params are zeros, timing is checked in full" in out and "timing: no violations" in out
    assert main(args + ["--timing-only", "--random-weights", "1"]) == 1
    assert "--timing-only compiles without weights" in capsys.readouterr().err

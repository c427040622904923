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
from compiler.partition import balanced_cuts, layer_boundaries, periodic_cuts
from compiler.repeats import Run
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
    """The timing-only program, its repeated blocks written out, is the full one: every instruction,
    placement, SRAM image word (the copies' constants come last) and SRAM total."""
    assert full.length() == fast.length()
    assert fast.instructions() == len(full)
    fast = fast.expanded()
    for name in TABLES:
        assert np.array_equal(getattr(full, name), getattr(fast, name)), name
    assert full.placements == fast.placements

    def image(p):
        o = np.lexsort((p.image_word, p.image_slice, p.image_chip))
        return p.image_chip[o], p.image_slice[o], p.image_word[o], p.image_data[o]

    assert all(np.array_equal(a, b) for a, b in zip(image(full), image(fast)))
    assert full.meta["sram_bytes_per_chip"] == fast.meta["sram_bytes_per_chip"]
    # every instruction names the op it comes from (the copies: their own stage's)
    assert [full.meta["ops"][k] for k in full.meta["op_of"]] == [fast.meta["ops"][k] for k in fast.meta["op_of"]]


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


def gpt2_ring(layers: int = 10):
    """One chip per stage on a ring: every hand-over but the first leaves over link 1 and arrives on
    link 0, so stages 2 .. pp - 2 form a run of alike stages."""
    return module_of("gpt2", GPT2Config(layers=layers, d_model=32, heads=4, ffn=64, vocab=64, max_seq=8))


@pytest.mark.parametrize(
    "module, system, tp, pp, run",
    [
        (gpt2_ring(), "ring:16", 1, 10, [3, 8, 1]),
        # a node per stage: the all-reduce inside it, the hand-over through chips 0 and 4 of one node
        # to chips 7 and 3 of the next (forwarded within both)
        (module_of("llama", LlamaConfig(7, 64, heads=8, kv_heads=8, ffn=128, vocab=128, max_seq=8)), "rack", 8, 7,
         [2, 5, 1]),  # fmt: skip
    ],
    ids=["gpt2-ring", "llama-rack-tp8"],
)
def test_alike_stages_are_stored_once_and_expand_to_the_full_program(module, system, tp, pp, run):
    from lpu.report import report

    full = compile_module(module, named_system(system), None, tp=tp, pp=pp)
    fast = compile_module(module, named_system(system), None, tp=tp, pp=pp, timing_only=True)
    memo = fast.meta["timing_only"]
    copies = len(Run(*run).copies)
    assert memo["runs"] == [run] and memo["stage_blocks_copied"] == copies * len(fast.entries)
    assert len(fast.repeats) == len(fast.entries) and len(fast) < len(full)
    assert_same_program(full, fast)
    for entry in fast.entries:  # the report reads the copies without writing them out
        a, b = report(fast, entry).to_json(), report(full, entry).to_json()
        a.pop("timing_only"), b.pop("timing_only")
        assert a == b  # busy cycles, SRAM, links, every bound, the critical path and its ops


def cut_inside_layers(layers: int, pp: int):
    """A Llama on a ring of small chips (SRAM for fewer than two layers), so that its stages are cut
    inside layers when pp < layers."""
    from isa.chip import TINY
    from isa.system import SystemConfig
    from lpu.strategies import links_for

    chip = TINY.replace(c2c_links=8, mem_slice_bytes=11520, mem_slices_per_hemisphere=8)
    system = SystemConfig(f"ring{pp}", chip, pp, links_for("ring", pp), link_latency_cycles=20)
    config = LlamaConfig(layers, 64, heads=4, kv_heads=2, ffn=128, vocab=32, max_seq=4)
    return module_of("llama", config), system


@pytest.mark.parametrize("layers, pp, run", [(21, 14, [3, 12, 2]), (20, 15, [3, 13, 3])])
def test_stages_alike_a_period_apart_are_stored_once(layers, pp, run):
    """Layers cut inside them (too few stages for whole layers: 1.5 and 1.33 layers a stage, on
    chips whose SRAM holds fewer than two) repeat every 2 and 3 stages: the template is a period of
    stages, its copies a period apart, and the program written out is the full one (every table,
    placement, image word, op name and report field)."""
    from lpu.report import report

    m, system = cut_inside_layers(layers, pp)
    full = compile_module(m, system, None, tp=1, pp=pp)
    fast = compile_module(m, system, None, tp=1, pp=pp, timing_only=True)
    memo = fast.meta["timing_only"]
    copies = len(Run(*run).copies)
    assert memo["runs"] == [run] and memo["stage_blocks_copied"] == copies * len(fast.entries)
    assert (fast.repeats.chip_step == run[2]).all() and len(fast) < len(full)
    assert_same_program(full, fast)
    for entry in fast.entries:
        a, b = report(fast, entry).to_json(), report(full, entry).to_json()
        a.pop("timing_only"), b.pop("timing_only")
        assert a == b


def test_a_run_whose_stages_do_not_repeat_is_compiled_stage_by_stage(monkeypatch):
    """If the placements of a run's blocks do not repeat (here a run made up to include the first
    stage, which holds the embedding), nothing is copied and the program is still the full one."""
    import compiler.backend as backend

    m = gpt2_ring()
    full = compile_module(m, named_system("ring:16"), None, tp=1, pp=10)
    monkeypatch.setattr(backend, "find_runs", lambda *a: [Run(0, 8)])
    fast = compile_module(m, named_system("ring:16"), None, tp=1, pp=10, timing_only=True)
    assert fast.meta["timing_only"]["stage_blocks_copied"] == 0 and not len(fast.repeats)
    assert fast.meta["timing_only"]["runs_not_repeating"].startswith("stages 0..8 of")
    assert_same_program(full, fast)


def test_a_run_whose_first_stage_is_placed_otherwise_is_compiled_stage_by_stage(monkeypatch):
    """A run whose template follows the stage after the embedding: that stage is not placed as the
    template's last stage (what it receives comes from the embedding's stage), so the copies would
    not read their predecessor as the template reads it (copied without the check, this program
    differs from the full one). Nothing is copied, and the program is the full one. (Found runs
    start a stage later: the tests above.)"""
    import compiler.backend as backend

    m = module_of("llama", llama(8))
    full = compile_module(m, named_system("node"), None, tp=1, pp=8)
    monkeypatch.setattr(backend, "find_runs", lambda *a: [Run(1, 6)])
    fast = compile_module(m, named_system("node"), None, tp=1, pp=8, timing_only=True)
    assert fast.meta["timing_only"]["stage_blocks_copied"] == 0 and not len(fast.repeats)
    assert fast.meta["timing_only"]["runs_not_repeating"].startswith("stages 1..6 of")
    assert_same_program(full, fast)


def test_runs_start_a_period_in_when_a_stage_in_does_not_repeat(monkeypatch):
    """When the runs found a stage into the alike stages do not repeat (here one made up to start at
    the stage after the embedding), the compile tries again with runs a period in, and keeps those:
    the full program, its copies stored once."""
    import compiler.backend as backend
    from compiler.repeats import find_runs

    m, system = cut_inside_layers(21, 14)
    tried = []

    def runs(plan, slice_of, link_of, warm):
        tried.append(warm)
        return [Run(1, 12, 2)] if warm == 1 else find_runs(plan, slice_of, link_of, warm)

    monkeypatch.setattr(backend, "find_runs", runs)
    fast = compile_module(m, system, None, tp=1, pp=14, timing_only=True)
    memo = fast.meta["timing_only"]
    assert tried == [1, None] and memo["runs"] == [[4, 11, 2]] and memo["stage_blocks_copied"] == 4 * 2
    assert memo["runs_warmed_up"].startswith("stages 1..12 of")
    assert_same_program(compile_module(m, system, None, tp=1, pp=14), fast)


def test_a_program_with_copies_runs_on_the_emulator_and_matches_numpy():
    config = GPT2Config(layers=10, d_model=32, heads=4, ffn=64, vocab=64, max_seq=8)
    p = compile_module(gpt2_ring(), named_system("ring:16"), None, tp=1, pp=10, timing_only=True)
    assert len(p.repeats)
    w = FAMILIES["gpt2"][0].random_weights(config, 5)
    got = generate_on_emulator(p, [3, 1, 4], 2, w)
    assert got.violations == []
    assert got.ids == generate_on_reference(p, [3, 1, 4], 2, w)


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
    # one budget for all stages, or one per stage
    budget = data.draw(st.integers(0, 12) | st.lists(st.integers(0, 12), min_size=pp, max_size=pp), label="budget")
    caps = budget if isinstance(budget, list) else [budget] * pp
    got = balanced_cuts([float(c) for c in cost], [float(p) for p in params], allowed, pp, budget)

    def stages(starts):
        bounds = [0, *starts, n]
        return [(sum(cost[a:b]), sum(params[a:b])) for a, b in zip(bounds, bounds[1:])]

    feasible = [
        max(c for c, _ in stages(list(starts)))
        for starts in itertools.combinations(allowed, pp - 1)
        if all(p <= cap for (_, p), cap in zip(stages(list(starts)), caps))
    ]
    if not feasible:
        assert got is None
        return
    assert got is not None and len(got) == pp - 1 and all(c in allowed for c in got)
    assert all(p <= cap for (_, p), cap in zip(stages(got), caps))
    assert max(c for c, _ in stages(got)) == min(feasible)


@settings(max_examples=60, deadline=None)
@given(
    layer=st.lists(st.integers(0, 9), min_size=2, max_size=6),
    periods=st.integers(2, 4),
    shape=st.sampled_from([(5, 4), (3, 2), (4, 3), (10, 9)]),
    data=st.data(),
)
def test_property_periodic_cuts_repeat_every_period_within_the_budget(layer, periods, shape, data):
    """L layers over pp stages, cut inside layers: every stage starts the same number of ops after
    the stage a period (pp / gcd stages) before it, stages are contiguous and nonempty, and no
    stage's params exceed the budget, the first and last stage's with the params of the ops before
    and after the layers (an embedding, a head) too (or None when no such cut exists)."""
    per_layers, per_stages = shape
    layers, pp = per_layers * periods, per_stages * periods
    k = len(layer)
    head, tail = data.draw(st.integers(0, 3), label="head"), data.draw(st.integers(0, 3), label="tail")
    params_layer = data.draw(st.lists(st.integers(0, 5), min_size=k, max_size=k), label="params")
    cost = [1.0] * head + [float(c) for c in layer] * layers + [1.0] * tail
    outer = st.lists(st.integers(0, 4), min_size=head + tail, max_size=head + tail)
    params_outer = [float(p) for p in data.draw(outer, label="params outside the layers")]
    params = params_outer[:head] + [float(p) for p in params_layer] * layers + params_outer[head:]
    starts = [head + i * k for i in range(layers + 1)]
    budget = float(data.draw(st.integers(0, 3 * sum(params_layer) + 1), label="budget"))
    got = periodic_cuts(cost, params, starts, pp, budget)
    if budget >= sum(params):  # anything fits: a cut is found
        assert got is not None
    if got is None:
        return
    assert len(got) == pp - 1 and got == sorted(set(got)) and 0 < got[0] and got[-1] < len(cost)
    bounds = [0, *got, len(cost)]
    assert all(sum(params[a:b]) <= budget for a, b in zip(bounds, bounds[1:]))
    span = per_layers * k
    firsts = [0, *got]
    for s in range(1, pp - per_stages):
        assert firsts[s + per_stages] == firsts[s] + span


def test_periodic_cuts_leave_room_for_an_embedding_and_a_head():
    """The first and last stage of every period are cut with less room, by the params before and
    after the layers: a cut where stage 0 would hold the embedding and a full share of a period
    (over the budget) is avoided, not refused."""
    layer_cost, layer_params = [5.0, 1.0], [4.0, 0.0]
    cost = [1.0] + layer_cost * 6 + [1.0]
    params = [3.0] + layer_params * 6 + [1.0]
    starts = [1 + 2 * i for i in range(7)]
    got = periodic_cuts(cost, params, starts, 4, 9.0)
    assert got == [3, 7, 9]  # stage 0: the embedding and one layer (7); 1: two layers (8); ...
    bounds = [0, *got, len(cost)]
    assert [sum(params[a:b]) for a, b in zip(bounds, bounds[1:])] == [7.0, 8.0, 4.0, 9.0]


def test_seventy_b_stages_repeat_every_nine():
    """Llama-70B's 80 layers over 72 stages (int8, tp 8 on dragonfly:8) do not fit two whole layers
    in a stage: they are cut inside layers, alike every 9 stages (10 layers)."""
    from compiler.partition import Partitioner
    from models.llama import LlamaConfig, module_text

    big = LlamaConfig(80, 8192, 64, 8, 28672, 32000, 16, dtype="i8")
    m = decompose(parse(module_text(big)))
    part = Partitioner(m, named_system("dragonfly:8"), 8, 72)
    for g in m.graphs:
        stage = part.stages(g)
        firsts = [stage.index(s) for s in range(72)]
        cuts = sorted(layer_boundaries(list(g.ops)))
        k = cuts[1] - cuts[0]
        assert any((f - cuts[0]) % k for f in firsts[1:])  # inside layers
        assert all(firsts[s + 9] - firsts[s] == 10 * k for s in range(1, 63)), g.name


def test_seventy_b_layers_one_per_stage_are_whole():
    """Llama-70B's shapes, one layer a stage (8 over 8 stages, both entries): every stage holds one
    whole layer, the first with the f16 embedding too (65.5 + 107 MB per chip, within the stage
    budget), so the stages repeat one to the next (a budget that cuts inside layers here leaves a
    64-layer compile without runs)."""
    from compiler.partition import Partitioner
    from models.llama import LlamaConfig, module_text

    big = LlamaConfig(8, 8192, 64, 8, 28672, 32000, 16, dtype="i8")
    m = decompose(parse(module_text(big)))
    part = Partitioner(m, named_system("dragonfly:8"), 8, 8)
    for g, stage in zip(m.graphs, part.entry_stages()):
        firsts = [stage.index(s) for s in range(1, 8)]
        assert firsts == sorted(layer_boundaries(list(g.ops)))[1:8], g.name


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


def test_cli_stores_alike_stages_once(tmp_path, capsys):
    model = tmp_path / "g.lpu"
    assert main(["model", "gpt2", "--layers", "10", "--d-model", "32", "--heads", "4", "--ffn", "64", "--vocab",
                 "64", "--max-seq", "8", "-o", str(model)]) == 0  # fmt: skip
    prog = tmp_path / "g.lpuprog"
    args = ["compile", str(model), "--system", "ring:16", "--tp", "1", "--pp", "10", "-o", str(prog)]
    assert main(args + ["--timing-only"]) == 0
    out = capsys.readouterr().out
    assert "stored: alike stages once" in out and "6 stored once as copies (alike stages 3..8)" in out
    assert main(["report", str(prog)]) == 0
    out = capsys.readouterr().out
    assert "6 stored once as copies" in out and "per token:" in out
    assert main(["run", str(prog), "--entry", "decode"]) == 0  # the emulator writes the copies out
    assert "timing: no violations" in capsys.readouterr().out


@settings(max_examples=3, deadline=None)
@given(layers=st.integers(8, 11), data=st.data())
def test_property_stored_runs_equal_the_full_compile(layers, data):
    """GPT-2 one chip per stage on a ring, 8 to 11 stages: the program with its copies written out
    is the full one. With a layer per stage there is a run to store once; with more layers than
    stages some stages hold two, which may break it (then nothing is copied)."""
    pp = data.draw(st.integers(8, layers), label="pp")
    m = gpt2_ring(layers)
    full = compile_module(m, named_system("ring:16"), None, tp=1, pp=pp)
    fast = compile_module(m, named_system("ring:16"), None, tp=1, pp=pp, timing_only=True)
    if layers == pp:
        assert fast.meta["timing_only"]["stage_blocks_copied"] == 2 * (pp - 7)  # run 2 .. pp - 2
    assert_same_program(full, fast)


def test_timings_give_seconds_per_pass_and_leave_the_program_alone():
    from isa.program import to_bytes

    m = module_of("llama", llama(4))
    phases: dict[str, float] = {}
    timed = compile_module(m, named_system("node"), None, tp=1, pp=4, timing_only=True, timings=phases)
    plain = compile_module(m, named_system("node"), None, tp=1, pp=4, timing_only=True)
    assert to_bytes(timed) == to_bytes(plain)
    for phase in ("partition", "find runs", "lower", "order", "schedule", "allocate and emit", "check"):
        assert phases[phase] >= 0.0, phases
    assert 0.0 < sum(phases.values()) < 600.0


def test_the_cycle_collector_is_as_it_was_after_a_compile():
    import gc

    m = module_of("llama", llama(2))
    assert gc.isenabled()
    compile_module(m, named_system("node"), None, tp=1, pp=2, timing_only=True)
    assert gc.isenabled()
    with pytest.raises(LpuError):  # also when the compile refuses
        compile_module(m, named_system("node"), {}, tp=1, pp=2, timing_only=True)
    assert gc.isenabled()
    gc.disable()
    try:
        compile_module(m, named_system("node"), None, tp=1, pp=2)
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()

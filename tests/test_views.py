"""Views of a program from the file alone: the report (busy units, cycles, the lower bound and the
critical path, per-token figures), the Perfetto trace and the plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compiler import parse
from compiler.backend import compile_module
from emulator.run import Emulator
from isa.assembly import assemble
from isa.diagnostics import LpuError
from isa.spec import BY_MNEMONIC, DTYPE_BYTES
from isa.system import named_system
from lpu.arrays import random_inputs, random_weights
from lpu.cli import main
from lpu.report import BOUND_NAMES, report
from lpu.strategies import CHIP_OPS, chips, modules, systems_of
from lpu.trace import instruction_events, trace_events
from models import FAMILIES
from models.llama import LlamaConfig

GPT = ROOT / "examples" / "gpt_block.lpu"
LLAMA = LlamaConfig(layers=2, d_model=32, heads=4, kv_heads=2, ffn=64, vocab=64, max_seq=8)


@pytest.fixture(scope="module")
def decoder():
    m = parse(FAMILIES["llama"][0].module_text(LLAMA), "llama.lpu")
    w = FAMILIES["llama"][0].random_weights(LLAMA, 0)
    return compile_module(m, named_system("node"), w, tp=2, pp=2), m, w


@pytest.fixture(scope="module")
def block():
    m = parse(GPT.read_text(), str(GPT))
    w = random_weights(m, 0)
    return compile_module(m, named_system("tsp"), w), m, w


def emulated(program, m, entry):
    inputs = {
        "prefill": {"ids": np.arange(1, LLAMA.max_seq + 1, dtype=np.int32), "len": np.array(3, np.int32)},
        "decode": {"tok": np.array([5], np.int32), "pos": np.array(3, np.int32)},
    }.get(entry) or random_inputs(m, m.graph(entry), 0)
    return Emulator(program).run(entry, inputs)


@pytest.mark.parametrize("which, entry", [("block", "main"), ("decoder", "decode"), ("decoder", "prefill")])
def test_report_agrees_with_the_emulator(which, entry, request):
    program, m, _ = request.getfixturevalue(which)
    run = emulated(program, m, entry)
    assert run.violations == []
    r = report(program, entry)
    assert r.cycles == run.cycles
    assert {k: v for k, v in r.busy.items() if v} == {k: v for k, v in run.busy.items() if v}
    assert r.lower_bound_cycles <= r.cycles and r.bound_ratio >= 1.0
    assert r.binding_bound in BOUND_NAMES and r.bounds[r.binding_bound] == r.lower_bound_cycles


def test_report_of_a_decoder_has_per_token_figures(decoder):
    program, _, _ = decoder
    r = report(program)
    assert r.entry == "decode" and r.chips == 4
    assert r.latency_per_token_s == pytest.approx(r.cycles / 900e6)
    assert r.tokens_per_s == pytest.approx(1 / r.latency_per_token_s)
    assert r.energy_per_token_j == pytest.approx(4 * 300.0 * r.latency_per_token_s)
    assert r.gpu["bound"] == "memory" and r.gpu["latency_per_token_s"] > 0
    assert r.link_bytes and all(v % program.system.vector_wire_bytes == 0 for v in r.link_bytes.values())
    sram = r.sram_per_chip[0]
    assert (
        sram["weights"] > 0
        and sram["state"] > 0
        and sum(sram[k] for k in ("weights", "state", "activations")) == sram["total"]
    )
    # the critical path names ops of the module, with their place in the text
    assert any("@ llama.lpu:" in s.op for s in r.critical_path)
    assert [s.earliest_cycle for s in r.critical_path] == sorted(s.earliest_cycle for s in r.critical_path)


TIGHT = """lpuprog 1
system tiny
entry main
input main x f16[2, 8] @ 0 mem.w0 0
output main out0 f16[2, 8] @ 0 mem.e0 0
     0 main       0    0 mem.w0  read addr=0 step=2 dst=E1 dt=f16 n=2 <- mem:image@0
     1 main       2    0 vxm.q0  add a=E1 b=E1 dst=E2 dt=f16 n=2 <- a:#0 b:#0
     2 main       4    0 mem.e0  write addr=0 step=2 a=E2 dt=f16 n=2 <- a:#1
"""


def test_the_bound_of_a_program_that_cannot_be_faster_is_its_length():
    """read -> add -> write, each vector taken the cycle it arrives: nothing can start earlier, so the
    critical path is the schedule and the ratio is 1.0."""
    p = assemble(TIGHT, "tight.lpuasm")
    run = Emulator(p).run("main", {"x": np.ones((2, 8), np.float32)})
    assert run.violations == [] and run.cycles == 8
    r = report(p)
    assert (r.cycles, r.lower_bound_cycles, r.bound_ratio, r.binding_bound) == (8, 8, 1.0, "critical_path")
    assert [s.op for s in r.critical_path] == ["read", "add", "write"]


@settings(max_examples=40, deadline=None)
@given(modules(max_ops=6, ops=CHIP_OPS, max_graphs=1), chips(), st.integers(0, 3))
def test_property_the_lower_bound_is_never_above_the_schedule(m, chip, seed):
    try:
        program = compile_module(m, systems_of(chip), random_weights(m, seed))
    except LpuError:
        assume(False)
    for entry in program.entries:
        r = report(program, entry)
        assert 0 <= r.lower_bound_cycles <= r.cycles, (r.bounds, r.cycles)
        assert all(v <= r.cycles for v in r.bounds.values())


def test_trace_is_valid_trace_event_json_with_every_instruction_once(decoder):
    program, _, _ = decoder
    trace = json.loads(json.dumps(trace_events(program)))
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    phases = {"X", "M", "s", "f", "C"}
    for e in events:
        assert e["ph"] in phases and isinstance(e["pid"], int)
        if e["ph"] == "X":
            assert isinstance(e["tid"], int) and e["ts"] >= 0 and e["dur"] > 0 and isinstance(e["name"], str)
            assert {"id", "entry", "cycle", "text", "op"} <= set(e["args"])
        if e["ph"] == "C":
            assert e["ts"] >= 0 and all(isinstance(v, (int, float)) for v in e["args"].values())
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index")
    ids = np.sort(instruction_events(trace))
    assert np.array_equal(ids, np.arange(len(program)))
    starts = {e["id"] for e in events if e["ph"] == "s"}
    finishes = {e["id"] for e in events if e["ph"] == "f"}
    assert starts and starts == finishes  # every flow arrow has both ends
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {f"chip {c}" for c in range(4)}
    # SRAM in use over time: never negative, never above what the allocation reserved on the chip
    sram = [e for e in events if e["ph"] == "C" and e["name"] == "SRAM in use"]
    assert {e["pid"] for e in sram} == set(range(4))
    for e in sram:
        assert 0 <= e["args"]["bytes"] <= program.meta["sram_bytes_per_chip"][e["pid"]]
    assert max(e["args"]["bytes"] for e in sram) > min(e["args"]["bytes"] for e in sram if e["args"]["bytes"])


def test_cli_report_trace_and_plot(tmp_path, capsys, decoder):
    from isa.program import save

    program, _, _ = decoder
    prog = tmp_path / "d.lpuprog"
    save(program, str(prog))
    assert main(["report", str(prog), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for key in ("cycles", "seconds", "lower_bound_cycles", "bound_ratio", "binding_bound", "chips",
                "sram_bytes_max_per_chip", "latency_per_token_s", "tokens_per_s"):  # fmt: skip
        assert key in got, key
    assert got["cycles"] == program.length("decode") and got["chips"] == 4
    assert main(["report", str(prog), "--entry", "prefill"]) == 0
    out = capsys.readouterr().out
    assert "entry prefill:" in out and "lower bound:" in out and "critical path" in out
    assert main(["report", str(prog), "--entry", "nope"]) == 1
    assert "has no entry 'nope'" in capsys.readouterr().err
    trace = tmp_path / "t.json"
    assert main(["trace", str(prog), "-o", str(trace)]) == 0
    assert len(instruction_events(json.loads(trace.read_text()))) == len(program)
    png = tmp_path / "g.png"
    assert main(["report", str(prog), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensor_view_follows_a_param_from_sram_through_the_streams(block):
    from lpu.inspect import tensor_instructions

    program, _, _ = block
    where, ids = tensor_instructions(program, "w_qkv")
    assert len(where) == 1 and where[0].startswith("param w_qkv f16[64, 192]: chip 0 mem.")
    mnemonics = {program.spec(int(i)).mnemonic for i in ids}
    assert "read" in mnemonics and "lw" in mnemonics  # read from SRAM, loaded into a matrix unit
    assert list(program.cycle[ids]) == sorted(program.cycle[ids])
    where, ids = tensor_instructions(program, "%qkv")
    assert where == ["%qkv: computed by %qkv = matmul @ " + str(GPT) + ":16:10"]
    assert "mm" in {program.spec(int(i)).mnemonic for i in ids}
    with pytest.raises(LpuError, match="no tensor 'nope'"):
        tensor_instructions(program, "nope")


def test_tensor_view_follows_a_value_over_the_links(decoder):
    from lpu.api import link_vectors
    from lpu.inspect import tensor_instructions

    program, _, _ = decoder
    sends = {v.send: v.recv for v in link_vectors(program)}
    _, ids = tensor_instructions(program, "cache.0.k")
    assert len(ids)
    touched = set(ids.tolist())
    assert all(sends[s] in touched for s in touched if s in sends)  # a sent vector's receive is listed


def test_line_trace_shows_each_busy_queue_cycle_by_cycle():
    from lpu.inspect import line_trace

    text = line_trace(assemble(TIGHT, "tight.lpuasm"), "main", 0, 6)
    assert text.splitlines() == [
        "cycle   mem.w0  vxm.q0  mem.e0",
        "    0     read       .       .",
        "    1        =       .       .",
        "    2        .     add       .",
        "    3        .       =       .",
        "    4        .       .   write",
        "    5        .       .       =",
    ]
    with pytest.raises(LpuError, match="the range is empty"):
        line_trace(assemble(TIGHT, "tight.lpuasm"), "main", 5, 5)


def test_cli_inspect_tensor_and_waves(tmp_path, capsys, block):
    from isa.program import save

    program, _, _ = block
    prog = tmp_path / "b.lpuprog"
    save(program, str(prog))
    assert main(["inspect", str(prog), "--tensor", "w_qkv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# param w_qkv") and all(" main " in line for line in out[1:])
    assert main(["inspect", str(prog), "--waves", "0:10"]) == 0
    assert capsys.readouterr().out.startswith("cycle ")
    assert main(["inspect", str(prog), "--waves", "x:y"]) == 1
    assert "expected A:B with integers" in capsys.readouterr().err


def test_instruction_table_api(block):
    import lpu

    program, _, _ = block
    t = lpu.instructions(program)
    assert len(t) == len(program)
    mxm = t.where(unit="MXM")
    assert set(mxm["mnemonic"]) <= {"lw", "iw", "mm", "acc"} and len(mxm)
    assert sum(t.sum_by("unit", "busy").values()) == sum(lpu.report(program).busy.values())
    row = t.where(t["id"] == 0).rows()[0]
    assert row["id"] == 0 and row["op"] and "Table(" in repr(t)


def _long_matmul(rows: int, k: int, n: int, dtype: str) -> str:
    out = "i32" if dtype == "i8" else dtype
    return (
        f"module long_k\nparam @w : {dtype}[{k}, {n}]\n"
        f"graph main(%x: {dtype}[{rows}, {k}]) -> ({out}[{rows}, {n}]) {{\n"
        f"  %y = matmul(%x, @w) : {out}[{rows}, {n}]\n  return %y\n}}\n"
    )


def test_a_plane_loads_its_tiles_one_after_another_after_the_first_pass():
    """One row times a weight of 24 tiles on one plane: the chain of sources alone is a few passes
    long (195 cycles: a weight install has no source, its weights sit in SRAM from cycle 0), but a
    plane holds one tile and loads one more, so 21 of the 24 tiles are loaded and installed one
    after another after the first pass (on the tiny chip an install's 20 cycles outweigh a load's
    8 rows). The critical path counts them, and stays within the schedule."""
    chip = named_system("tiny").chip
    kt = chip.mxm_k("f16")
    m = parse(_long_matmul(1, 24 * kt, chip.lanes, "f16"), "long_k.lpu")
    p = compile_module(m, named_system("tiny"), random_weights(m, 0))
    run = Emulator(p).run("main", random_inputs(m, m.graph("main"), 0))
    assert run.violations == []
    r = report(p)
    install = BY_MNEMONIC["iw"].busy_cycles(0)
    assert r.cycles == run.cycles
    assert 21 * max(kt, install) <= r.bounds["critical_path"] <= r.cycles, (r.bounds, r.cycles)
    assert [s.op for s in r.critical_path if "matmul" in s.op]


@settings(max_examples=25, deadline=None)
@given(
    chips(),
    st.integers(4, 12),
    st.integers(1, 5),
    st.integers(1, 3),
    st.sampled_from(["f16", "i8"]),
    st.integers(0, 3),
)
def test_property_plane_floors_never_exceed_the_schedule(chip, tiles, rows, chunks, dtype, seed):
    """Long matmuls (many tiles per plane, several column chunks and rows) on random chips: with the
    floors of the planes' loads the critical path still never exceeds the emulated schedule, and it
    counts every load but three of each chain of passes."""
    kt = chip.mxm_k(dtype)
    # a weight that fits a MEM slice is one chain of passes per column chunk (a bigger one is cut into
    # row blocks, each its own chain)
    assume(tiles * kt * chunks * chip.lanes * DTYPE_BYTES[dtype] <= chip.mem_slice_bytes // 2)
    m = parse(_long_matmul(rows, tiles * kt, chunks * chip.lanes, dtype), "long_k.lpu")
    try:
        p = compile_module(m, systems_of(chip), random_weights(m, seed))
    except LpuError:
        assume(False)
    run = Emulator(p).run("main", random_inputs(m, m.graph("main"), seed))
    assert run.violations == []
    r = report(p)
    assert r.cycles == run.cycles
    assert 0 <= r.lower_bound_cycles <= r.cycles, (r.bounds, r.cycles)
    install = BY_MNEMONIC["iw"].busy_cycles(0)
    assert r.bounds["critical_path"] >= (tiles - 3) * max(kt, install), (r.bounds, tiles, kt)


def test_the_bound_follows_the_planes_through_a_pipeline():
    """A d1024 Llama in int8 over two stages: each stage's planes load tile after tile (row blocks of
    its weights, many chains of passes per plane), and the next stage waits for the hand-over. The
    chain of sources alone says 10,079 cycles of 61,708 (and the matrix units' 11,912 bind);
    counting every chain a stage's hand-over needs on each plane (through the other chips' partial
    sums and the pieces of cut reads), 22,713: over a third of the schedule, and it binds. (Before
    stop 23 spread the weights over all four planes, 37,321 of 75,830: the same work on fewer
    planes.)"""
    c = LlamaConfig(layers=2, d_model=1024, heads=8, kv_heads=4, ffn=3072, vocab=256, max_seq=8, dtype="i8")
    p = compile_module(
        parse(FAMILIES["llama"][0].module_text(c)), named_system("node"), None, tp=1, pp=2, timing_only=True
    )
    r = report(p, "decode")
    assert r.binding_bound == "critical_path"
    assert 0.33 * r.cycles <= r.bounds["critical_path"] <= r.cycles, (r.bounds, r.cycles)


@settings(max_examples=8, deadline=None)
@given(
    st.sampled_from([256, 512]),
    st.integers(1, 3),
    st.sampled_from([(1, 2), (2, 2), (2, 1), (1, 3), (4, 1)]),
    st.sampled_from(["f16", "i8"]),
    st.booleans(),
)
def test_property_the_bound_of_a_pipeline_is_never_above_its_schedule(d, layers, split, dtype, timing_only):
    """Multi-chip Llamas, stored whole or with repeated stages: every bound of every entry is within
    the schedule."""
    c = LlamaConfig(
        layers=layers, d_model=d, heads=8, kv_heads=4, ffn=2 * d, vocab=128, max_seq=8, dtype=dtype
    )
    m = parse(FAMILIES["llama"][0].module_text(c))
    weights = None if timing_only else FAMILIES["llama"][0].random_weights(c, 0)
    p = compile_module(m, named_system("node"), weights, tp=split[0], pp=split[1], timing_only=timing_only)
    for entry in p.entries:
        r = report(p, entry)
        assert all(0 <= v <= r.cycles for v in r.bounds.values()), (entry, r.bounds, r.cycles)


def test_a_source_read_past_its_row_follows_the_next_pieces():
    """A read cut into two pieces (its vectors have two writers) feeds one consumer that names the
    first piece: vectors past its end come from the second piece (isa/program.py). The longest path
    follows them: the consumer waits for what the second piece waits for, less the vectors before."""
    from lpu.report import _longest

    none = np.zeros(0, np.int64)
    floors = (
        np.full(5, -1, np.int64),
        none,
        none,
        none,
        np.zeros(6, np.int64),
        np.zeros((0, 2), np.int64),
        none,
        none,
        none,
    )
    # rows: 0 an early writer, 1 a late one, 2 and 3 the read's pieces (2 vectors each), 4 the consumer
    src = np.array([[-1], [-1], [0], [1], [2]], np.int64)
    gap = np.array([[0], [0], [2], [100], [3]], np.int64)
    n = np.array([2, 2, 2, 2, 4], np.int64)
    piece_next = np.array([False, False, True, False, False])
    off, step = np.zeros((5, 1), np.int64), np.ones((5, 1), np.int64)
    segs = np.array([[0, 5, 0, 0, 0]], np.int64)
    earliest, via, _, _ = _longest(
        segs, np.zeros(0, np.int64), src, gap, n, 5, floors, (n, piece_next, off, step)
    )
    assert earliest.tolist() == [0, 0, 2, 100, 101] and via[4] == 3
    # a consumer of the first piece's vectors only does not wait for the second
    n_short = np.array([2, 2, 2, 2, 2], np.int64)
    earliest, _, _, _ = _longest(
        segs, np.zeros(0, np.int64), src, gap, n_short, 5, floors, (n_short, piece_next, off, step)
    )
    assert earliest[4] == 5

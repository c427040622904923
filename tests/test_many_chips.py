"""Many chips: partitioning, collectives as scheduled transfers, and the emulator's link checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compiler import parse
from compiler.backend import candidates, compile_module, search
from compiler.decompose import decompose
from compiler.partition import Transfer, partition
from emulator.run import Emulator
from isa.chip import TINY
from isa.diagnostics import LpuError
from isa.program import from_bytes, to_bytes
from isa.spec import BY_MNEMONIC
from isa.system import SystemConfig, named_system
from lpu.api import check_link_schedule, check_outputs, link_vectors, link_wait_cycles, weights_from_image
from lpu.arrays import random_inputs, random_weights
from lpu.strategies import blocks, links_for, modules, splits, systems

GPT = ROOT / "examples" / "gpt_block.lpu"
MLP = ROOT / "examples" / "mlp.lpu"


def tiny_system(n: int, topology: str = "all", latency: int = 20) -> SystemConfig:
    return SystemConfig(
        f"{topology}{n}", TINY.replace(c2c_links=8), n, links_for(topology, n), link_latency_cycles=latency
    )


def compile_and_check(m, system, tp, pp, seed=0, entry="main"):
    w = random_weights(m, seed)
    program = compile_module(m, system, w, tp=tp, pp=pp)
    inputs = random_inputs(m, m.graph(entry), seed)
    run = Emulator(program).run(entry, inputs)
    assert run.violations == [], [v.render() for v in run.violations[:3]]
    report = check_outputs(program, entry, inputs, run.outputs)
    assert report.ok, report.lines
    assert check_link_schedule(program) == []
    return program, run


SMALL_GPT = """module gpt
param @g1 : f16[32]
param @b1 : f16[32]
param @wq : f16[32, 32]
param @wk : f16[32, 32]
param @wv : f16[32, 32]
param @wo : f16[32, 32]
param @g2 : f16[32]
param @b2 : f16[32]
param @w1 : f16[32, 64]
param @w2 : f16[64, 32]
graph main(%x: f16[4, 32]) -> (f16[4, 32]) {
  %h = layernorm(%x, @g1, @b1)
  %q = matmul(%h, @wq)
  %k = matmul(%h, @wk)
  %v = matmul(%h, @wv)
  %q4 = reshape(%q) : f16[4, 4, 8]
  %qh = transpose(%q4) {perm = [1, 0, 2]}
  %k4 = reshape(%k) : f16[4, 4, 8]
  %kt = transpose(%k4) {perm = [1, 2, 0]}
  %v4 = reshape(%v) : f16[4, 4, 8]
  %vh = transpose(%v4) {perm = [1, 0, 2]}
  %s = matmul(%qh, %kt)
  %p = softmax(%s) {axis = -1}
  %o = matmul(%p, %vh)
  %ot = transpose(%o) {perm = [1, 0, 2]}
  %o2 = reshape(%ot) : f16[4, 32]
  %a = matmul(%o2, @wo)
  %x1 = add(%x, %a)
  %h2 = layernorm(%x1, @g2, @b2)
  %f = matmul(%h2, @w1)
  %gl = gelu(%f)
  %m = matmul(%gl, @w2)
  %y = add(%x1, %m)
  return %y
}
"""


@pytest.mark.parametrize("chips", [1, 2, 4, 8])
def test_every_split_of_a_gpt_block_matches_the_reference(chips):
    m = parse(SMALL_GPT)
    system = tiny_system(8)
    for tp, pp in [(tp, chips // tp) for tp in (1, 2, 4, 8) if chips % tp == 0]:
        program, run = compile_and_check(m, system, tp, pp)
        used = set(program.chip.tolist())
        assert used <= set(range(tp * pp)) and len(used) >= min(tp * pp, 2 if chips > 1 else 1)


def test_tensor_parallel_is_megatron_shaped():
    """Attention heads and MLP columns split, one all-reduce per block: the transfers are the two
    all-reduces (reduce-scatter + all-gather), nothing else."""
    m = decompose(parse(SMALL_GPT))
    plan = partition(m, tiny_system(2), tp=2, pp=1)
    whats = {st.what.split(" = ")[0] for st in plan.entries[0].stmts if isinstance(st, Transfer)}
    assert whats == {"%x1", "%y"}, whats  # the residual adds after the row-split wo and w2
    parts = {name: part for _, g, name, part in plan.params}
    assert parts["wq"] == (1, 16, 32) or parts["wq"][0] == 1  # column split
    assert parts["wo"][0] == 0 and parts["w2"][0] == 0  # row split
    assert parts["w1"][0] == 1


def test_a_fused_qkv_projection_is_split_by_heads():
    """examples/gpt_block.lpu slices one [64, 192] QKV matmul: each slice becomes a matmul by its own
    columns of the param, so tensor parallelism still needs only the two residual all-reduces."""
    m = decompose(parse(GPT.read_text()))
    plan = partition(m, tiny_system(2), tp=2, pp=1)
    whats = {st.what.split(" = ")[0] for st in plan.entries[0].stmts if isinstance(st, Transfer)}
    assert whats == {"%x1", "%y"}, whats
    parts = sorted(part for c, _, name, part in plan.params if name == "w_qkv" and c == 1)
    assert parts == [(1, 32, 64), (1, 96, 128), (1, 160, 192)]  # chip 1: the second half of q, k and v


def test_examples_on_a_node_and_on_a_ring():
    for path in (MLP, GPT):
        m = parse(path.read_text(), str(path))
        compile_and_check(m, named_system("node"), 2, 2)
    compile_and_check(parse(MLP.read_text()), named_system("ring:8"), 4, 2)


def test_forwarding_through_chips_that_are_not_neighbours():
    m = parse(SMALL_GPT)
    system = tiny_system(4, "line")
    program, _ = compile_and_check(m, system, 4, 1)
    hops = {(v.src_chip, v.dst_chip) for v in link_vectors(program)}
    assert hops <= {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)}  # only neighbours talk
    assert (1, 2) in hops  # 0 <-> 3 goes through 1 and 2


def test_all_reduce_across_nodes_is_hierarchical():
    """Two nodes of 4 chips joined by one link (0-4): each node sums onto its first chip, only the
    node sums cross between the nodes, and every chip ends with the same total."""
    inside = [(a, b) for base in (0, 4) for a in range(base, base + 4) for b in range(a + 1, base + 4)]
    system = SystemConfig("two_nodes", TINY.replace(c2c_links=8), 8, tuple(inside) + ((0, 4),), 20)
    m = parse(
        "module m\nparam @w1 : f16[16, 64]\nparam @w2 : f16[64, 16]\n"
        "graph main(%x: f16[2, 16]) -> (f16[2, 16]) {\n  %h = matmul(%x, @w1)\n  %r = relu(%h)\n"
        "  %y = matmul(%r, @w2)\n  %z = add(%y, %x)\n  return %z\n}\n"
    )
    program, _ = compile_and_check(m, system, 8, 1)
    across = [v for v in link_vectors(program) if (v.src_chip < 4) != (v.dst_chip < 4)]
    assert {(v.src_chip, v.dst_chip) for v in across} == {(0, 4), (4, 0)}
    assert len(across) == 2 * 2  # one f32 [2, 16] node sum (two vectors) each way


def test_pipeline_stages_only_hand_forward():
    m = parse(MLP.read_text())
    program, _ = compile_and_check(m, named_system("node"), 1, 4)
    pairs = {(v.src_chip, v.dst_chip) for v in link_vectors(program)}
    assert all(a < b for a, b in pairs) and {b for _, b in pairs} == {1, 2, 3}, pairs
    assert set(program.chip.tolist()) == {0, 1, 2, 3}


def test_decode_loop_with_state_keeps_every_replica_in_step():
    m = parse(
        "module dec\nparam @w : f16[16, 16]\nstate @cache : f16[4, 16]\n"
        "graph main(%x: f16[1, 16], %pos: i32[]) -> (f16[1, 16]) {\n"
        "  %h = matmul(%x, @w)\n"
        "  %c = update_slice(@cache, %h, %pos) {axis = 0}\n"
        "  %s = reduce_sum(%c) {axis = 0, keepdims = true}\n"
        "  %y = add(%s, %h)\n"
        "  commit @cache = %c\n"
        "  return %y\n}\n"
    )
    from compiler.reference import Reference

    w = random_weights(m, 3)
    for tp, pp in [(1, 1), (2, 1), (2, 2), (1, 3)]:
        program = compile_module(m, tiny_system(4, "ring"), w, tp=tp, pp=pp)
        emu, ref = Emulator(program), Reference(m, w)
        rng = np.random.default_rng(0)
        for pos in range(4):
            x = {"x": rng.standard_normal((1, 16)).astype(np.float16), "pos": np.array(pos, np.int32)}
            run = emu.run("main", x)
            assert run.violations == []
            want = ref.run("main", x)
            np.testing.assert_allclose(
                run.outputs[0].astype(np.float64), want[0].astype(np.float64), rtol=4e-3, atol=2e-3
            )


def test_shards_round_trip_through_the_file_and_the_listing():
    from isa.assembly import assemble, disassemble

    m = parse(SMALL_GPT)
    w = random_weights(m, 0)
    program = compile_module(m, tiny_system(2), w, tp=2, pp=1)
    assert any(pl.part for pl in program.placements)
    again = from_bytes(to_bytes(program))
    assert to_bytes(again) == to_bytes(program)
    text = disassemble(program)
    assert " part 1:" in text and " part 0:" in text
    again = assemble(text)  # the listing carries everything but the IR text (meta)
    assert disassemble(again) == text
    assert to_bytes(dataclasses.replace(again, meta=program.meta)) == to_bytes(program)
    back = weights_from_image(program)
    for name, value in w.items():
        np.testing.assert_array_equal(back[name], value.astype(back[name].dtype))


def test_compiling_many_chips_is_deterministic():
    m = parse(SMALL_GPT)
    w = random_weights(m, 0)
    a = to_bytes(compile_module(m, tiny_system(4, "ring"), w, tp=2, pp=2))
    b = to_bytes(compile_module(parse(SMALL_GPT), tiny_system(4, "ring"), w, tp=2, pp=2))
    assert a == b


def test_search_keeps_the_fastest_split():
    m = parse(SMALL_GPT)
    best, tried, why = search(m, tiny_system(4), random_weights(m, 0), 4)
    ok = [c for c in tried if c.cycles is not None]
    assert {(c.tp, c.pp) for c in tried} == set(candidates(4))
    assert best.cycles == min(c.cycles for c in ok)
    assert best.program.length() == best.cycles
    assert "cycles" in why or "only" in why


def test_a_model_too_big_for_the_system_says_how_many_chips_it_needs():
    m = parse(  # 768 KiB of f16 weights; a tiny chip holds 512 KiB in 64 KiB slices
        "module big\nparam @w1 : f16[128, 1024]\nparam @w2 : f16[1024, 128]\nparam @w3 : f16[128, 1024]\n"
        "graph main(%x: f16[2, 128]) -> (f16[2, 1024]) {\n  %a = matmul(%x, @w1)\n  %b = matmul(%a, @w2)\n"
        "  %c = matmul(%b, @w3)\n  return %c\n}\n"
    )
    w = random_weights(m, 0)
    with pytest.raises(LpuError, match=r"more than a tiny chip's 524288; about 2 chips would hold them"):
        compile_module(m, tiny_system(1), w)
    with pytest.raises(LpuError, match=r"fits no split of 1 chip of system all1: .* about 2 chips"):
        search(m, tiny_system(1), w, 1)
    compile_and_check(m, tiny_system(8), 8, 1)  # shards of 32 KiB fit


def test_bad_splits_are_refused():
    m = parse(MLP.read_text())
    with pytest.raises(LpuError, match="needs 16 chips but system node has 8"):
        compile_module(m, named_system("node"), None, tp=4, pp=4)
    with pytest.raises(LpuError, match="at least 1"):
        compile_module(m, named_system("node"), None, tp=0, pp=1)


def test_link_timing_is_read_from_the_program_alone():
    m = parse(SMALL_GPT)
    system = tiny_system(2, latency=30)
    program = compile_module(m, system, random_weights(m, 0), tp=2, pp=1)
    vectors = link_vectors(program)
    assert vectors and all(v.taken == v.handoff + system.link_cycles_per_vector + 30 for v in vectors)
    assert 0 < link_wait_cycles(program) < program.length()
    # the check bites: a receive one cycle late, or two sends on top of each other
    recv = vectors[0].recv
    late = dataclasses.replace(program, cycle=program.cycle.copy())
    late.cycle[recv] += 1
    assert any("arrives on cycle" in p for p in check_link_schedule(late))
    send = BY_MNEMONIC["send"].code
    sends = [int(i) for i in np.nonzero(program.opcode == send)[0]]
    same = [s for s in sends if program.chip[s] == program.chip[sends[0]] and s != sends[0]]
    close = dataclasses.replace(program, cycle=program.cycle.copy())
    close.cycle[same[0]] = close.cycle[sends[0]]
    assert any("two vectors at once" in p for p in check_link_schedule(close))


def _mutants(program):
    """Every send and receive moved one cycle either way, and re-targeted to each other link."""
    send, recv = BY_MNEMONIC["send"], BY_MNEMONIC["recv"]
    rows = [int(i) for i in np.nonzero(np.isin(program.opcode, [send.code, recv.code]))[0]]
    for i in rows:
        for d in (-1, 1):
            p = dataclasses.replace(program, cycle=program.cycle.copy())
            p.cycle[i] += d
            yield f"#{i} cycle {d:+d}", p
        spec = program.spec(i)
        col = spec.operands.index("link")
        links = len(program.system.chip_links(int(program.chip[i])))
        for k in range(links + 1):  # link `links` does not exist
            if k != program.fields[i, col]:
                p = dataclasses.replace(program, fields=program.fields.copy())
                p.fields[i, col] = k
                yield f"#{i} link {k}", p


def test_every_send_and_receive_mutation_is_caught():
    m = parse(
        "module m\nparam @w : f16[16, 32]\nparam @w2 : f16[32, 16]\n"
        "graph main(%x: f16[2, 16]) -> (f16[2, 16]) {\n  %h = matmul(%x, @w)\n  %r = relu(%h)\n"
        "  %y = matmul(%r, @w2)\n  return %y\n}\n"
    )
    w = random_weights(m, 0)
    program = compile_module(m, tiny_system(3, "all", latency=5), w, tp=2, pp=1)
    inputs = random_inputs(m, m.graphs[0], 0)
    count = 0
    for name, mutant in _mutants(program):
        run = Emulator(mutant).run("main", inputs)
        assert run.violations, f"mutant {name} survived"
        count += 1
    rows = int(np.isin(program.opcode, [BY_MNEMONIC["send"].code, BY_MNEMONIC["recv"].code]).sum())
    # an all-reduce: a reduce-scatter, then the halves of the result to chip 0, which returns it
    assert rows >= 6 and count == 4 * rows  # two cycle shifts and two other links (one does not exist)


@settings(max_examples=25)
@given(blocks(), systems(chips=(2, 3, 4, 8)), st.data())
def test_property_transformer_blocks_on_random_systems(m, system, data):
    tp, pp = data.draw(splits(system))
    try:
        compile_and_check(m, system, tp, pp, seed=data.draw(st.integers(0, 3)))
    except LpuError as e:  # a random small chip may be too small: that must be said clearly
        assert "does not fit in SRAM" in str(e) or "one MEM slice holds" in str(e), str(e)


@settings(max_examples=40)
@given(modules(max_ops=5, max_graphs=1, states=False), systems(chips=(2, 4)), st.data())
def test_property_random_graphs_on_random_systems(m, system, data):
    assume(
        not any(
            op.name == "update_slice" and op.attr("axis") % op.result.type.rank == op.result.type.rank - 1
            for g in m.graphs
            for op in g.ops
        )
    )
    tp, pp = data.draw(splits(system))
    w = random_weights(m, 0)
    try:
        program = compile_module(m, system, w, tp=tp, pp=pp)
    except LpuError as e:
        assert "does not fit in SRAM" in str(e) or "one MEM slice holds" in str(e), str(e)
        return
    g = m.graphs[0]
    inputs = random_inputs(m, g, 0)
    try:
        from compiler.reference import Reference

        Reference(m, w).run(g.name, inputs)
    except LpuError:
        return
    run = Emulator(program).run(g.name, inputs)
    assert run.violations == [], [v.render() for v in run.violations[:3]]
    report = check_outputs(program, g.name, inputs, run.outputs)
    assert report.ok, report.lines
    assert check_link_schedule(program) == []


BIG_MLP = """module big
param @w1 : f16[768, 3072]
param @w2 : f16[3072, 768]
graph main(%x: f16[2, 768]) -> (f16[2, 768]) {
  %h = matmul(%x, @w1)
  %g = gelu(%h)
  %y = matmul(%g, @w2)
  return %y
}
"""


@pytest.mark.parametrize("tp", [1, 2])
def test_weights_larger_than_a_slice_are_cut_into_blocks(tp):
    """GPT-2-small's MLP (4.7 MB per weight; a tsp MEM slice holds 2.5 MiB): whole or column-split
    weights are cut into column blocks, row-split ones into row blocks summed in f32."""
    m = parse(BIG_MLP)
    program, _ = compile_and_check(m, named_system("node"), tp, 1)
    parts = {name: sorted(pl.part for pl in program.placements if pl.name == name and pl.chip == 0)
             for name in ("w1", "w2")}  # fmt: skip
    limit = program.system.chip.mem_slice_bytes
    assert all(pl.words(320) <= limit for pl in program.placements if pl.role == "param")
    assert len(parts["w1"]) >= 2 and all(p[0] == 1 for p in parts["w1"])
    # blocks are at most a third of a slice: w2's 320-column strips (2 MB) are cut into rows too
    assert len(parts["w2"]) >= 2 and all((1 if tp == 1 else 0) in p[::3] for p in parts["w2"])
    assert all(pl.words(320) * 3 <= limit for pl in program.placements if pl.role == "param" and pl.part)
    assert weights_from_image(program).keys() == {"w1", "w2"}


TALL = """
module tall
param @w : f16[2048, 64]
graph main(%x: f16[2, 2048]) -> (f16[2, 64]) {
  %y = matmul(%x, @w)
  return %y
}
"""


@pytest.mark.parametrize("tp", [1, 2])
def test_weights_too_large_in_both_axes_are_cut_into_a_grid_of_blocks(tp):
    """A column of a [2048, 64] f16 weight (64 KiB) is still larger than a tiny slice's budget: each
    column block is cut into row blocks too; the placements name both cuts and round-trip."""
    program, _ = compile_and_check(parse(TALL), tiny_system(2), tp, 1)
    parts = sorted(pl.part for pl in program.placements if pl.name == "w" and pl.chip == 0)
    assert len(parts) >= 4 and all(len(p) == 6 and p[0] == 0 and p[3] == 1 for p in parts), parts
    limit = program.system.chip.mem_slice_bytes
    assert all(pl.words(16) <= limit for pl in program.placements if pl.role == "param")
    assert np.array_equal(weights_from_image(program)["w"], random_weights(parse(TALL), 0)["w"])
    again = from_bytes(to_bytes(program))
    assert [pl.part for pl in again.placements] == [pl.part for pl in program.placements]


EMBEDDING = """
module emb
param @table : f16[1500, 64]
graph main(%ids: i32[5]) -> (f16[5, 64]) {
  %x = gather(@table, %ids)
  %y = mul(%x, %x)
  return %y
}
"""


@pytest.mark.parametrize("tp", [1, 2])
def test_a_gather_table_larger_than_a_slice_is_split_by_columns_and_cut_into_row_blocks(tp):
    """An embedding table is not copied to every chip: tensor parallelism splits its columns (each
    chip looks up its own), and a table still larger than a slice is cut into blocks of rows, each
    looked up with the ids clipped into it; every row comes from the block that holds its id."""
    m = parse(EMBEDDING)
    w = random_weights(m, 0)
    program = compile_module(m, tiny_system(2), w, tp=tp, pp=1)
    parts = sorted(pl.part for pl in program.placements if pl.name == "table" and pl.chip == 0)
    assert len(parts) >= 2 and all(p[0] == 0 for p in parts)  # row blocks
    if tp == 2:
        assert all(p[3:] == (1, 0, 32) for p in parts)  # of chip 0's columns
    limit = program.system.chip.mem_slice_bytes
    assert all(pl.words(16) * 16 <= limit for pl in program.placements if pl.role == "param")
    inputs = {"ids": np.array([0, 1499, 700, 17, 1024], np.int32)}  # first, last, and across blocks
    run = Emulator(program).run("main", inputs)
    assert run.violations == []
    assert check_outputs(program, "main", inputs, run.outputs).ok
    assert np.array_equal(weights_from_image(program)["table"], w["table"])


def test_when_weights_fill_the_chips_a_gather_table_is_split_by_rows():
    """Weights over half of the chips' SRAM: the table is split by rows instead (whole rows, no lane
    padding), each chip looking up the ids it holds, zero rows for the others, the rows summed."""
    m = parse(EMBEDDING.replace("f16[1500, 64]", "f16[5000, 64]"))
    w = random_weights(m, 0)
    program = compile_module(m, tiny_system(2), w, tp=2, pp=1)
    for chip in (0, 1):
        parts = sorted(pl.part for pl in program.placements if pl.name == "table" and pl.chip == chip)
        assert len(parts) >= 2 and all(p[0] == 0 and len(p) == 3 for p in parts)  # whole rows
        assert parts[0][1] == 2500 * chip and parts[-1][2] == 2500 * (chip + 1)
    inputs = {"ids": np.array([0, 4999, 2499, 2500, 17], np.int32)}  # both ends of both chips' rows
    run = Emulator(program).run("main", inputs)
    assert run.violations == []
    assert check_outputs(program, "main", inputs, run.outputs).ok
    assert np.array_equal(weights_from_image(program)["table"], w["table"])


INT8_TALL = """
module q
param @w : i8[4096, 64]
graph main(%x: f16[2, 4096]) -> (f16[2, 64]) {
  %wf = cast(@w) {to = "f16"}
  %y = matmul(%x, %wf)
  return %y
}
"""


@pytest.mark.parametrize("tp", [1, 2])
def test_int8_weights_are_converted_on_their_way_to_the_matrix_unit(tp):
    """x @ cast(W_i8): W stays int8 in SRAM (cut into blocks when larger than a slice) and each vector
    is converted on the VXM between its read and the weight load; no f16 copy of W is stored."""
    m = parse(INT8_TALL)
    program, _ = compile_and_check(m, tiny_system(2), tp, 1)
    blocks = [pl for pl in program.placements if pl.name == "w" and pl.chip == 0]
    assert len(blocks) >= 2 and all(pl.dtype == "i8" for pl in blocks)
    limit = program.system.chip.mem_slice_bytes
    assert all(pl.words(16) * 16 <= limit for pl in blocks)
    cvt, lw = BY_MNEMONIC["cvt"].code, BY_MNEMONIC["lw"].code
    loads = np.nonzero(program.opcode == lw)[0]
    assert len(loads) and all(program.opcode[program.src[i, 0]] == cvt for i in loads)  # lw <- cvt
    # the SRAM a chip uses is about the int8 weight, not an f16 copy of it
    assert max(program.meta["sram_bytes_per_chip"]) < 1.5 * sum(pl.words(16) * 16 for pl in blocks)


def test_attention_that_cannot_split_over_tp_is_reported_where_it_is(tmp_path):
    """Key/value heads that no divisor of tp (above 1) divides: the attention runs whole on every chip
    (keys and values gathered), which costs time; lpu compile says so, once per entry, at the score
    matmul, and names a tp that would split it."""
    from lpu.cli import main
    from models.llama import LlamaConfig
    from models.llama import module_text as llama_text

    text = llama_text(LlamaConfig(1, 96, 3, 3, 128, 128, 8))  # 3 heads over 4 chips
    src = tmp_path / "llama.lpu"
    src.write_text(text)
    m = parse(text, str(src))
    warned = compile_module(m, named_system("node"), None, tp=4, pp=1, timing_only=True).meta["warnings"]
    assert len(warned) == 2 and all("runs whole on every chip" in w and "tp=3 would split it" in w for w in warned)
    assert [w.split(": warning")[0].split(":")[0] for w in warned] == [str(src)] * 2
    assert "in 'prefill'" in warned[0] and "in 'decode'" in warned[1]
    assert "matmul(" in warned[1].splitlines()[1]  # the source line, with a caret under it
    fine = compile_module(m, named_system("node"), None, tp=3, pp=1, timing_only=True)
    assert "warnings" not in fine.meta
    # 2 key/value heads over 4 chips split with copies: nothing to warn about
    copies = parse(llama_text(LlamaConfig(1, 64, 4, 2, 128, 128, 8)))
    assert "warnings" not in compile_module(copies, named_system("node"), None, tp=4, pp=1, timing_only=True).meta

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["compile", str(src), "--system", "node", "--tp", "4", "--timing-only",
                     "-o", str(tmp_path / "p.lpuprog")])  # fmt: skip
    assert code in (0, None) and err.getvalue().count("warning: in '") == 2


def prefill_and_decode_match_the_reference(m, tp: int) -> None:
    """A toy Llama (max_seq 8) compiled with tp chips: a prefill of 3 ids and one decode step, each
    emulated without violations and equal to the reference interpreter."""
    from compiler.reference import Reference

    w = random_weights(m, 0)
    emu, ref = Emulator(compile_module(m, named_system("node"), w, tp=tp, pp=1)), Reference(m, w)
    ids = np.zeros(8, np.int32)
    ids[:3] = [5, 7, 9]
    for entry, x in (("prefill", {"ids": ids, "len": np.int32(3)}), ("decode", {"tok": ids[:1], "pos": np.int32(3)})):
        run = emu.run(entry, x)
        assert run.violations == []
        np.testing.assert_allclose(
            run.outputs[0].astype(np.float64), ref.run(entry, x)[0].astype(np.float64), rtol=4e-3, atol=2e-3
        )


def test_fewer_key_value_heads_than_tp_split_attention_by_head_with_copies():
    """2 key/value heads on tp=4: chips 0-1 run head 0's attention, chips 2-3 head 1's (each batched
    matmul holds one head per chip, not both), the output projection takes each chip's own rows
    (no gather of the attention output, whose transfers were 3 of the 6 sent before) and the result
    equals the reference. Also faster and
    smaller than running the whole attention on every chip (tp=4 before this split: 15,601 cycles
    and 101,432 instructions for the toy Llama d 128 on node tp 4 pp 2)."""
    from compiler.partition import Local
    from models.llama import LlamaConfig
    from models.llama import module_text as llama_text

    m = parse(llama_text(LlamaConfig(1, 64, 4, 2, 128, 128, 8)))
    plan = partition(decompose(m), named_system("node"), tp=4, pp=1)
    for e in plan.entries:
        batched = [st for st in e.stmts if isinstance(st, Local) and st.op.name == "matmul" and st.op.result.type.rank == 3]
        assert len(batched) == 2 * 4  # scores and values, on each of the 4 chips
        assert all(st.op.result.type.shape[0] == 1 for st in batched), [st.op.result.type for st in batched]
        # what crosses chips: the queries (gathered before they are grouped by key/value head) and
        # the residual stream's all-reduce after each projection; nothing of the attention itself
        sent = {st.what.split(" = ")[0] for st in e.stmts if isinstance(st, Transfer)}
        assert sent and all(w.startswith(("%q", "%x")) for w in sent), sent
    prefill_and_decode_match_the_reference(m, tp=4)


def test_a_column_split_that_saves_no_matrix_pass_is_computed_whole_where_it_is_needed_whole():
    """k_proj of a Llama with 2 key/value heads on tp=4: its 32 columns split 8 per chip, and each
    chip's slice still takes one pass of whole vectors, while attention needs whole keys. So every
    chip computes the keys from the whole weights: no transfer of keys, and the slices are gone."""
    from models.llama import LlamaConfig
    from models.llama import module_text as llama_text

    m = parse(llama_text(LlamaConfig(1, 64, 4, 2, 128, 128, 8)))
    plan = partition(decompose(m), named_system("node"), tp=4, pp=1)
    k = "model.layers.0.self_attn.k_proj.weight"
    assert sorted((c, part) for c, _, name, part in plan.params if name == k) == [(c, None) for c in range(4)]
    for e in plan.entries:
        sent = {st.what.split(" = ")[0] for st in e.stmts if isinstance(st, Transfer)}
        producers = {st.op.result.name for st in e.stmts if hasattr(st, "op") and st.op.name == "matmul"}
        assert not any(w.lstrip("%").startswith("k") for w in sent & {"%" + n for n in producers if n}), sent
    prefill_and_decode_match_the_reference(m, tp=4)


COPIES = """module copies
graph main(%a: f16[2, 4, 8], %b: f16[2, 8, 4]) -> (f16[2, 4, 4], f16[4, 2, 4], f16[4, 4, 2], f16[4, 4]) {
  %a2 = exp(%a)
  %b2 = tanh(%b)
  %s = matmul(%a2, %b2)
  %t = transpose(%s) {perm = [1, 0, 2]}
  %u = transpose(%s) {perm = [1, 2, 0]}
  %r = reduce_sum(%s) {axis = 0}
  return %s, %t, %u, %r
}
"""


@pytest.mark.parametrize("tp", [4, 8])
def test_values_split_with_copies_are_gathered_right(tp):
    """A batched matmul of 2 computed heads over 4 or 8 chips splits with copies; its result, and
    transposes that move the split to a middle axis (whole vectors gathered into place) and to the
    last axis (blocks of lanes received and concatenated), are gathered from one holder per block
    where they are returned, and a sum over the split axis gathers first. The emulated outputs
    equal the reference."""
    from compiler.partition import Local

    m = parse(COPIES)
    plan = partition(decompose(m), named_system("node"), tp=tp, pp=1)
    mm = [st.op.result.type.shape for st in plan.entries[0].stmts if isinstance(st, Local) and st.op.name == "matmul"]
    assert mm == [(1, 4, 4)] * tp, mm
    program, run = compile_and_check(m, named_system("node"), tp, 1)
    assert "warnings" not in program.meta


@pytest.mark.parametrize("tp", [2, 4])
def test_each_chip_moves_only_its_own_heads_of_the_cache(tp):
    """The keys and values come from the KV cache; their reshapes and transposes into [heads, ...]
    move only each chip's own head (at tp 4 with copies), never the whole cache."""
    from compiler.partition import Local
    from models.llama import LlamaConfig
    from models.llama import module_text as llama_text

    m = parse(llama_text(LlamaConfig(1, 64, 4, 2, 128, 128, 8)))
    plan = partition(decompose(m), named_system("node"), tp=tp, pp=1)
    for e in plan.entries:
        moves = [st.op for st in e.stmts if isinstance(st, Local) and st.op.name == "transpose"]
        kt = [op for op in moves if op.attr("perm") == (1, 2, 0)]  # keys [S, G, dh] -> [G, dh, S]
        vh = [op for op in moves if op.attr("perm") == (1, 0, 2) and op.result.type.shape[1:] == (8, 16)]
        assert len(kt) == tp and all(op.result.type.shape == (1, 16, 8) for op in kt), [op.result.type for op in kt]
        assert len(vh) == tp and all(op.result.type.shape[0] == 1 for op in vh), [op.result.type for op in vh]


@pytest.mark.parametrize("tp", [2, 4])
def test_the_kv_cache_is_split_by_heads(tp):
    """A Llama's KV cache ([S, kv_heads * head_dim], updated at a run-time row, read as [S, kv_heads,
    head_dim]) is held by heads: at tp 2 each chip its own head, at tp 4 (2 heads) each pair of
    chips one head. Each chip holds half the cache; decode steps update each chip's part in place
    and the state the emulator reads back is the whole cache, as the reference's. A state that is
    not a cache stays whole on every chip."""
    from compiler.reference import Reference
    from models.llama import LlamaConfig
    from models.llama import module_text as llama_text

    m = parse(llama_text(LlamaConfig(1, 64, 4, 2, 128, 128, 8)))
    w = random_weights(m, 0)
    p = compile_module(m, named_system("node"), w, tp=tp, pp=1)
    caches = [pl for pl in p.placements if pl.role == "state"]
    assert {pl.name for pl in caches} == {"cache.0.k", "cache.0.v"} and len(caches) == 2 * tp
    for pl in caches:
        head = pl.chip * 2 // tp  # the key/value head the chip attends with
        assert pl.shape == (8, 16) and pl.part == (1, 16 * head, 16 * head + 16), (pl.chip, pl.part)
    emu, ref = Emulator(p), Reference(m, w)
    ids = np.zeros(8, np.int32)
    ids[:3] = [5, 7, 9]
    runs = [("prefill", {"ids": ids, "len": np.int32(3)})]
    runs += [("decode", {"tok": np.array([t], np.int32), "pos": np.int32(3 + k)}) for k, t in enumerate([4, 2, 8])]
    for entry, x in runs:
        run = emu.run(entry, x)
        assert run.violations == []
        np.testing.assert_allclose(
            run.outputs[0].astype(np.float64), ref.run(entry, x)[0].astype(np.float64), rtol=4e-3, atol=2e-3
        )
        for name in ("cache.0.k", "cache.0.v"):
            assert emu.state[name].shape == (8, 32)
            np.testing.assert_allclose(
                emu.state[name].astype(np.float64), ref.state[name].astype(np.float64), rtol=4e-3, atol=2e-3
            )
    assert np.abs(emu.state["cache.0.v"][3:6]).min() > 0  # the decode steps' rows, in both heads

    other = parse(
        "module dec\nparam @w : f16[16, 16]\nstate @s : f16[4, 16]\n"
        "graph main(%x: f16[1, 16], %pos: i32[]) -> (f16[1, 16]) {\n"
        "  %h = matmul(%x, @w)\n  %c = update_slice(@s, %h, %pos) {axis = 0}\n"
        "  commit @s = %c\n  %y = add(%h, %h)\n  return %y\n}\n"
    )
    p = compile_module(other, tiny_system(4, "ring"), random_weights(other, 1), tp=2)
    assert [pl.part for pl in p.placements if pl.role == "state"] == [None, None]

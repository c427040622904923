"""One chip end to end: every op compiles, emulates with zero timing violations and matches the
reference interpreter, on the tiny and tsp presets; compilation is deterministic."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from compiler import parse
from compiler.backend import compile_module
from emulator.run import Emulator
from isa.diagnostics import LpuError
from isa.program import to_bytes
from isa.system import named_system
from lpu.api import check_outputs
from lpu.arrays import random_inputs, random_weights

ARGS = (
    "%a: f16[2, 3, 20], %b: f16[20], %v: f16[3, 20], %m: f16[20, 24], %q: i8[3, 20], %qw: i8[20, 5], "
    "%c: bool[3, 20], %f: f32[3, 20], %s: f32[3, 1], %i: i32[3, 20], %t: f16[10, 20], %ids: i32[2, 3], "
    "%p: i32[], %t3: f32[4, 5, 20], %u3: f32[4, 3, 20]"
)

# one statement per op (and per interesting form), each result returned
CASES = [
    "add(%a, %b)",
    "sub(%v, %a)",
    "mul(%a, %a)",
    "div(%a, %b)",
    "max(%v, %b)",
    "min(%f, %s)",
    "neg(%q)",
    "relu(%i)",
    "exp(%f)",
    "log(%b)",
    "tanh(%a)",
    "sigmoid(%f)",
    "erf(%f)",
    "silu(%a)",
    "sqrt(%b)",
    "rsqrt(%b)",
    "recip(%b)",
    "gelu(%a)",
    'gelu(%f) {approximate = "none"}',
    'cast(%a) {to = "i8"}',
    'cast(%q) {to = "f32"}',
    'cast(%f) {to = "bool"}',
    "where(%c, %v, %b)",
    "less(%f, %s)",
    "greater(%i, %i)",
    "equal(%c, %c)",
    "reduce_sum(%a) {axis = 2}",
    "reduce_sum(%a) {axis = 0}",
    "reduce_max(%f) {axis = 1, keepdims = true}",
    "reduce_max(%a)",
    "reduce_sum(%i) {axis = [0, 1]}",
    "reduce_mean(%f) {axis = 0, keepdims = true}",
    "softmax(%f)",
    "softmax(%a) {axis = 1}",
    "layernorm(%v, %b, %b)",
    "rmsnorm(%a, %b)",
    "matmul(%v, %m)",
    "matmul(%a, %m) : f32[2, 3, 24]",
    "matmul(%q, %qw)",
    "reshape(%a) : f16[6, 20]",
    "reshape(%a) : f16[2, 60]",
    "transpose(%a) {perm = [2, 0, 1]}",
    "transpose(%v)",
    "concat(%v, %v) {axis = 1}",
    "concat(%a, %a) {axis = 0}",
    "slice(%a) {axis = 2, start = 3, stop = 17}",
    "slice(%a) {axis = 1, start = 1, stop = 3}",
    "constant() {value = [[1.5, -2.0], [0.25, 3.0]]} : f16[2, 2]",
    "iota() {axis = 1} : i32[2, 5]",
    "gather(%t, %ids)",
    "gather(%t3, %p)",
    "gather(%b, %ids)",
    "update_slice(%t, %v, %p) {axis = 0}",
    "update_slice(%t3, %u3, %p) {axis = 1}",
]


def module_for(stmt: str) -> str:
    return f"module m\ngraph main({ARGS}) -> () {{\n  %r = {stmt}\n  return\n}}\n"


def compile_and_check(text: str, system: str, seed: int = 0):
    m0 = parse(text)
    # return the last op's result: fill in the signature from the verified module
    g = m0.graphs[0]
    result = g.ops[-1].result
    text = text.replace("-> ()", f"-> ({result.type})").replace("  return\n", f"  return %{result.name}\n")
    m = parse(text)
    w = random_weights(m, seed)
    program = compile_module(m, named_system(system), w)
    inputs = random_inputs(m, m.graphs[0], seed)
    for k, v in inputs.items():  # keep logs and square roots real
        if k == "b":
            inputs[k] = np.abs(v) + np.float16(0.5)

    run = Emulator(program).run("main", inputs)
    assert run.violations == [], [v.render() for v in run.violations[:5]]
    report = check_outputs(program, "main", inputs, run.outputs)
    assert report.ok, report.lines
    return program, run


@pytest.mark.parametrize("system", ["tiny", "tsp"])
@pytest.mark.parametrize("stmt", CASES)
def test_every_op_compiles_emulates_and_checks(stmt, system):
    compile_and_check(module_for(stmt), system)


@pytest.mark.parametrize("system", ["tiny", "tsp"])
def test_examples(system):
    for path in sorted((ROOT / "examples").glob("*.lpu")):
        if system == "tiny" and path.stem == "mlp":
            continue  # 1 MiB of weights: more than tiny's 512 KiB (see the SRAM test)
        m = parse(path.read_text(), str(path))
        program = compile_module(m, named_system(system), random_weights(m, 1))
        inputs = random_inputs(m, m.graphs[0], 1)
        run = Emulator(program).run("main", inputs)
        assert run.violations == []
        report = check_outputs(program, "main", inputs, run.outputs)
        assert report.ok, report.lines


def test_model_too_big_says_how_much_is_missing():
    m = parse((ROOT / "examples" / "mlp.lpu").read_text(), "mlp.lpu")
    with pytest.raises(
        LpuError,
        match=r"the model does not fit in SRAM: its params need 1051648 bytes, 527360 "
        r"more than a tiny chip's 524288; about 3 chips would hold them",
    ):
        compile_module(m, named_system("tiny"), random_weights(m, 0))
    # activations that outgrow the slices are found when SRAM is allocated, after scheduling
    # activations that outgrow the slices are found when SRAM is allocated, after scheduling:
    # eight 48 KiB values alive at once, on six 64 KiB slices
    lines = ["  %a1 = exp(%x)"] + [f"  %a{k} = exp(%a{k - 1})" for k in range(2, 9)]
    lines += ["  %s2 = add(%a1, %a2)"] + [f"  %s{k} = add(%s{k - 1}, %a{k})" for k in range(3, 9)]
    big = parse(
        "module m\ngraph main(%x: f32[64, 192]) -> (f32[64, 192]) {\n"
        + "\n".join(lines)
        + "\n  return %s8\n}\n"
    )
    small = named_system("tiny").chip.replace(mem_slices_per_hemisphere=3, mem_slice_bytes=65536)
    from isa.system import SystemConfig

    with pytest.raises(LpuError, match=r"does not fit in SRAM: \d+ more bytes are needed in"):
        compile_module(big, SystemConfig("small", small))


def test_tensor_larger_than_a_slice_is_refused_with_its_location():
    text = "module m\ngraph main(%x: f16[256, 256]) -> (f16[256, 256]) {\n  %y = exp(%x)\n  return %y\n}\n"
    with pytest.raises(
        LpuError, match=r"big.lpu:3:8: error: %y : f16\[256, 256\] needs 131072 bytes but one MEM slice"
    ):
        compile_module(parse(text, "big.lpu"), named_system("tiny"))
    # a weight is cut into blocks that fit a slice; this one then needs more than the chip's SRAM
    text = (
        "module m\nparam @w : f16[512, 512]\ngraph main(%x: f16[2, 512]) -> (f16[2, 512]) {\n"
        "  %y = matmul(%x, @w)\n  return %y\n}\n"
    )
    with pytest.raises(LpuError, match=r"does not fit in SRAM: \d+ more bytes are needed"):
        compile_module(parse(text, "big.lpu"), named_system("tiny"))


def test_update_slice_with_too_many_lane_offsets_is_refused_clearly():
    text = (
        "module m\ngraph main(%w: f16[2, 100], %u: f16[2, 1], %p: i32[]) -> () {\n"
        "  %r = update_slice(%w, %u, %p) {axis = 1}\n  return\n}\n"
    )
    with pytest.raises(
        LpuError,
        match=r"g.lpu:3:8: error: update_slice along the last axis has 100 possible "
        r"offsets; the chip code selects among at most 64",
    ):
        compile_module(parse(text, "g.lpu"), named_system("tiny"))


@pytest.mark.parametrize("system", ["tiny", "tsp"])
def test_decode_loop_with_kv_cache_state(system):
    """One compiled decode program serves every step: the cache persists in SRAM state."""
    from compiler.reference import Reference

    m = parse((ROOT / "tests" / "ir" / "kv_decode.lpu").read_text(), "kv_decode.lpu")
    w = random_weights(m, 5)
    program = compile_module(m, named_system(system), w)
    emu, ref = Emulator(program), Reference(m, w)
    for pos, tok in enumerate([3, 11, 8, 15]):  # @cos and @sin have 16 rows
        inputs = {"tok": np.array([tok], np.int32), "pos": np.int32(pos)}
        run = emu.run("decode", inputs)
        assert run.violations == [], [v.render() for v in run.violations[:3]]
        want = ref.run("decode", inputs)
        for got, exp in zip(run.outputs, want):
            np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=4e-3, atol=1e-3)
        for name in ("k_cache", "v_cache"):
            np.testing.assert_allclose(
                emu.state[name].astype(np.float64), ref.state[name].astype(np.float64), rtol=4e-3, atol=1e-3
            )
    assert np.abs(emu.state["k_cache"][:4]).sum() > 0 and not emu.state["k_cache"][4:].any()


def test_kv_cache_is_updated_in_place():
    """A decode step scatters its new row into the cache state itself: no instruction copies the
    cache (a copy before the scatter and one more for the commit would move the whole cache every
    step). Another reader of the state's old value keeps the copy (reads of a state see its value at
    the start of the run), and stays right."""
    from compiler.reference import Reference

    m = parse((ROOT / "tests" / "ir" / "kv_decode.lpu").read_text(), "kv_decode.lpu")
    p = compile_module(m, named_system("tiny"), random_weights(m, 5))
    cache_vectors = 16  # f16[16, 16] on 16 lanes
    ops, op_of = p.meta["ops"], p.meta["op_of"]
    mem = {"read", "write"}
    moves = [
        ops[op_of[j]]
        for j in range(len(p))
        if p.spec(j).mnemonic in mem
        and p.n[j] >= cache_vectors
        and ("cache" in ops[op_of[j]] or "commit" in ops[op_of[j]])
    ]
    assert moves == [], moves
    assert not any(ops[op_of[j]].startswith("commit") for j in range(len(p)))

    text = """module m
state @s : f16[4, 16]
graph main(%v: f16[1, 16], %p: i32[]) -> (f16[4, 16], f16[4, 16]) {
  %u = update_slice(@s, %v, %p) {axis = 0}
  %old = add(@s, @s)
  commit @s = %u
  return %old, %u
}
"""
    m = parse(text, "s.lpu")
    emu, ref = Emulator(compile_module(m, named_system("tiny"))), Reference(m, {})
    rng = np.random.default_rng(3)
    for p_ in (1, 3):
        x = {"v": rng.standard_normal((1, 16)).astype(np.float16), "p": np.int32(p_)}
        got, want = emu.run("main", x), ref.run("main", x)
        assert got.violations == []
        for g, w in zip(got.outputs, want):
            assert np.array_equal(g, w)
        assert np.array_equal(emu.state["s"], ref.state["s"])


def test_compilation_is_deterministic_across_processes(tmp_path):
    code = (
        "import sys; from compiler import parse; from compiler.backend import compile_module; "
        "from isa.system import named_system; from lpu.arrays import random_weights; "
        "from isa.program import to_bytes; m = parse(open(sys.argv[1]).read()); "
        "sys.stdout.buffer.write(to_bytes(compile_module(m, named_system('tiny'), random_weights(m, 0))))"
    )
    path = str(ROOT / "examples" / "gpt_block.lpu")
    outs = [
        subprocess.run(
            [sys.executable, "-c", code, path],
            capture_output=True,
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("0", "123")
    ]
    assert outs[0] and outs[0] == outs[1]
    m = parse(open(path).read())
    assert to_bytes(compile_module(m, named_system("tiny"), random_weights(m, 0))) == outs[0]


# -- the differential property: random graphs on random small chips --------------------------------

from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lpu.strategies import CHIP_OPS, chips, modules, systems_of  # noqa: E402


@given(modules(max_ops=6, ops=CHIP_OPS, max_graphs=1), chips(), st.integers(0, 3))
def test_property_random_graphs_on_random_chips(m, chip, seed):
    assume(
        not any(
            op.name == "update_slice" and op.attr("axis") % op.result.type.rank == op.result.type.rank - 1
            for g in m.graphs
            for op in g.ops
        )
    )  # lanes moved by a run-time amount: not compiled yet
    w = random_weights(m, seed)
    try:
        program = compile_module(m, systems_of(chip), w)
    except LpuError as e:
        assert "does not fit in SRAM" in str(e) or "one MEM slice holds" in str(e), str(e)
        return
    g = m.graphs[0]
    inputs = random_inputs(m, g, seed)
    try:  # ids or offsets out of range: the reference refuses them too (documented), nothing to compare
        from compiler.reference import Reference as _Ref

        _Ref(m, w).run(g.name, inputs)
    except LpuError:
        return
    run = Emulator(program).run(g.name, inputs)
    assert run.violations == [], [v.render() for v in run.violations[:3]]
    report = check_outputs(program, g.name, inputs, run.outputs)
    assert report.ok, report.lines


def test_check_catches_wrong_values_infinities_and_nans():
    m = parse(
        "module m\ngraph main(%x: f32[3], %i: i32[2]) -> (f32[3], i32[2]) {\n  %y = exp(%x)\n"
        "  %j = neg(%i)\n  return %y, %j\n}\n"
    )
    program = compile_module(m, named_system("tiny"), {})
    x = {"x": np.array([1000.0, 0.0, np.nan], np.float32), "i": np.array([3, -4], np.int32)}
    good = [np.array([np.inf, 1.0, np.nan], np.float32), np.array([-3, 4], np.int32)]
    assert check_outputs(program, "main", x, good).ok
    for k, bad in [
        (0, [1.0, 1.0, np.nan]),
        (0, [np.inf, 1.0, 0.0]),
        (0, [np.inf, 1.001, np.nan]),
        (1, [-3, 5]),
    ]:
        outs = list(good)
        outs[k] = np.array(bad, outs[k].dtype)
        report = check_outputs(program, "main", x, outs)
        assert (
            not report.ok and f"out{k}" in report.lines[k] and "differs from the reference" in report.lines[k]
        )


FOUND_BY_FUZZING = [
    # a returned view of a state is its value before the commit (was: after, the commit's copy ran
    # first because the return's copy was lowered after it)
    """module m
state @s : f32[]
graph main(%x: f16[]) -> (f32[1]) {
  %v0 = reshape(@s) : f32[1]
  %v1 = rsqrt(@s) : f32[]
  commit @s = %v1
  return %v0
}
""",
    # a returned state is its value at the start of the run, also when returned itself (the
    # reference interpreter returned the committed value)
    """module m
state @a : f16[]
graph main(%x: f16[]) -> (f16[]) {
  commit @a = %x
  return @a
}
""",
    # a one-column activation holds its value in every lane; a matrix pass multiplied the lanes
    # without weight rows too, and -inf * 0 made NaN
    """module m
graph main(%w: f16[1, 1]) -> (f16[2, 1]) {
  %c = constant() {value = -inf} : f16[2, 1]
  %y = matmul(%c, %w)
  return %y
}
""",
]


@pytest.mark.parametrize("system", ["tiny", "tsp"])
@pytest.mark.parametrize("text", FOUND_BY_FUZZING)
def test_cases_found_by_fuzzing(text, system):
    m = parse(text)
    program = compile_module(m, named_system(system), {})
    inputs = random_inputs(m, m.graphs[0], 0)
    emu = Emulator(program)
    for _ in range(2):  # the state case: twice, the second run sees the committed value
        run = emu.run("main", inputs)
        assert run.violations == [], [v.render() for v in run.violations[:3]]
    first = Emulator(program).run("main", inputs)
    assert check_outputs(program, "main", inputs, first.outputs).ok
    assert not np.isnan(first.outputs[0].astype(np.float64)).any()


# -- reads and writes in runs of vectors ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-6, 6), min_size=1, max_size=40))
def test_property_runs_rebuild_the_index_and_are_maximal(index):
    from compiler.jobs import runs

    cut = runs(index)
    assert cut[0][0] == 0 and [s for s, _, _ in cut] == sorted({s for s, _, _ in cut})
    ends = [s for s, _, _ in cut[1:]] + [len(index)]
    rebuilt = [f + step * i for (s, f, step), e in zip(cut, ends) for i in range(e - s)]
    assert rebuilt == index
    for (s, f, step), e in zip(cut[:-1], ends[:-1]):  # the next vector would not have continued it
        assert e - s == 1 or index[e] != f + step * (e - s)


def _instructions_of(program, op_prefix: str, mnemonic: str):
    """(n, ...) of the instructions of one IR op with that mnemonic."""
    from isa.spec import BY_MNEMONIC

    ops, of = program.meta["ops"], program.meta["op_of"]
    code = BY_MNEMONIC[mnemonic].code
    return [
        int(program.n[r])
        for r in range(len(program))
        if ops[of[r]].startswith(op_prefix) and int(program.opcode[r]) == code
    ]


def test_broadcasts_and_matmul_results_are_read_a_column_chunk_of_rows_per_instruction():
    """An elementwise op with broadcast operands is one pipeline writing its result with one
    instruction, so a matmul reading it takes a column chunk of all 16 rows per read (not a vector
    per row); a matmul's result (written a column chunk at a time) is read so by what follows."""
    text = """module m
graph main(%x: f16[16, 640], %g: f16[640], %s: f16[16, 1], %w: f16[640, 640], %w2: f16[640, 320]) -> () {
  %y = mul(%x, %g)
  %z = mul(%y, %s)
  %h = matmul(%z, %w)
  %r = add(%h, %y)
  %o = matmul(%r, %w2)
  return
}
"""
    program, _ = compile_and_check(text, "tsp")
    for op in ("%y = mul", "%z = mul"):
        assert _instructions_of(program, op, "write") == [32], op  # [16, 640]: 16 rows of 2 chunks
    # the matmuls' activation reads: per K-tile one read of a column chunk of the 16 rows
    assert _instructions_of(program, "%h = matmul", "read").count(16) == 4
    assert _instructions_of(program, "%o = matmul", "read").count(16) == 4
    assert 1 not in _instructions_of(program, "%h = matmul", "read")
    # the residual add goes a column chunk at a time, as the matmul wrote %h
    assert sorted(_instructions_of(program, "%r = add", "write")) == [16, 16]
    assert sorted(_instructions_of(program, "%r = add", "read")) == [16] * 4


def test_a_softmax_over_one_vector_per_row_reduces_every_row_at_once():
    """[24, 20]: one vector a row; each reduction is one read, one lane reduction and one write of
    all 24 rows (the max through a sel that fills the padding lanes), not a job per row."""
    text = "module m\ngraph main(%f: f32[24, 20]) -> () {\n  %p = softmax(%f)\n  return\n}\n"
    program, _ = compile_and_check(text, "tsp")
    assert _instructions_of(program, "%0 = reduce_max", "lred") == [24]
    assert _instructions_of(program, "%0 = reduce_max", "sel") == [24]
    assert _instructions_of(program, "%3 = reduce_sum", "lred") == [24]
    assert _instructions_of(program, "%3 = reduce_sum", "write") == [24]


def test_a_rope_rotates_its_halves_in_one_pipeline():
    """rotate-half: each output vector adds two lane maps (the negated upper half moved down, the
    lower half moved up) of vectors in different slices: one perm per source over all 32 vectors of
    [16, 2, 128], not a read, a perm and an add per vector."""
    text = (
        "module m\ngraph main(%x: f16[16, 2, 128], %c: f16[16, 1, 128], %s: f16[16, 1, 128]) -> () {\n"
        "  %p = rope(%x, %c, %s)\n  return\n}\n"
    )
    program, _ = compile_and_check(text, "tsp")
    perms = _instructions_of(program, "", "perm")
    assert perms and set(perms) == {32} and len(perms) <= 4, perms


def _matmul_chain(dims: list[int], rows: int = 1, batch: tuple[int, ...] = ()) -> str:
    """x [*batch, rows, dims[0]] times weights [*batch, dims[i], dims[i + 1]], one after another
    (the last op's result is returned by `compile_and_check`)."""
    lead = "".join(f"{b}, " for b in batch)
    args = [f"%x: f16[{lead}{rows}, {dims[0]}]"]
    args += [f"%w{i}: f16[{lead}{k}, {n}]" for i, (k, n) in enumerate(zip(dims, dims[1:]))]
    body = "".join(
        f"  %h{i + 1} = matmul({'%x' if i == 0 else f'%h{i}'}, %w{i})\n" for i in range(len(dims) - 1)
    )
    return f"module m\ngraph main({', '.join(args)}) -> () {{\n{body}  return\n}}\n"


def _weight_rows_per_plane(program) -> dict[tuple[str, int], int]:
    """Weight rows each matrix plane loads (`lw`), by (hemisphere, plane), over all chips."""
    from isa.spec import BY_MNEMONIC

    chip = program.system.chip
    queues = chip.queue_table()
    lw = program.opcode == BY_MNEMONIC["lw"].code
    out = {(s, p): 0 for s in "we" for p in range(chip.mxm_planes_per_hemisphere)}
    for q, n in zip(program.queue[lw], program.n[lw]):
        out[queues[int(q)].name.split(".")[1], queues[int(q)].plane] += int(n)
    return out


def _weight_rows_per_side(program) -> dict[str, int]:
    """Weight rows the matrix planes load (`lw`), per hemisphere, over all chips."""
    out = {"w": 0, "e": 0}
    for (side, _), n in _weight_rows_per_plane(program).items():
        out[side] += n
    return out


def test_matmuls_balance_the_weight_rows_the_two_sides_load():
    """Weights of 640 and 64 rows in turn: were the sides to take turns from matmul to matmul, the
    west planes would load 1,280 rows (both 640-row weights) and the east 256; each matmul's first
    block goes to the side that has loaded less so far, so each side loads 768, and the values
    still check."""
    program, _ = compile_and_check(_matmul_chain([640, 64, 640, 64, 640]), "tsp")
    assert _weight_rows_per_side(program) == {"w": 768, "e": 768}


def test_matmuls_of_one_column_chunk_take_turns_on_a_sides_planes():
    """Four matmuls of one column chunk (320 columns) in a chain: each block needs one of a side's
    two planes. Always taking plane 0, the two plane 0s would load all 1,280 rows; each block takes
    the plane of its side that loaded fewest, so each of the four loads one weight's 320 rows."""
    program, _ = compile_and_check(_matmul_chain([320] * 5), "tsp")
    assert _weight_rows_per_plane(program) == {("w", 0): 320, ("w", 1): 320, ("e", 0): 320, ("e", 1): 320}


def test_each_batch_of_a_batched_matmul_starts_on_the_lighter_side():
    """Three batches of a 960-column weight: each batch is a block of two planes and one of one
    plane (3 column chunks). Started once per matmul, the two-plane blocks of all three batches
    would go west (1,920 rows against 960); started per batch, the sides stay within one block."""
    text = """module m
graph main(%x: f16[3, 1, 320], %w: f16[3, 320, 960]) -> () {
  %h = matmul(%x, %w)
  return
}
"""
    program, _ = compile_and_check(text, "tsp")
    got = _weight_rows_per_side(program)
    assert got["w"] + got["e"] == 3 * 3 * 320 and abs(got["w"] - got["e"]) <= 2 * 320, got


@settings(max_examples=25, deadline=None)
@given(
    chip=st.sampled_from(["tiny", "tsp"]),
    dims=st.lists(st.integers(1, 60), min_size=2, max_size=6),
    rows=st.integers(1, 40),
    batch=st.sampled_from([(), (2,), (3,)]),
)
def test_property_the_sides_load_weight_rows_within_one_block_of_each_other(chip, dims, rows, batch):
    """Any chain of matmuls (batched or not, any number of rows): the two sides' weight rows never
    part by more than the largest block's (its planes times its weight rows), nor a side's planes
    by more than the largest weight's rows."""
    system = named_system(chip)
    c = system.chip
    dims = [-(-k * c.lanes // 20) for k in dims]  # 1/20 of a vector to three vectors
    try:
        program = compile_module(parse(_matmul_chain(dims, rows, batch)), system, None, timing_only=True)
    except LpuError:  # a tensor larger than a MEM slice of the tiny chip
        assume(False)
    per_side = c.mxm_planes_per_hemisphere
    block = max(min(-(-n // c.lanes), per_side) * k for k, n in zip(dims, dims[1:]))
    got = _weight_rows_per_side(program)
    assert abs(got["w"] - got["e"]) <= block, (got, block)
    # on a side, a block of fewer column chunks than planes takes the planes that loaded fewest rows
    per_plane = _weight_rows_per_plane(program)
    for side in "we":
        mine = [n for (s, _), n in per_plane.items() if s == side]
        assert max(mine) - min(mine) <= max(dims[:-1]), (per_plane, dims)


def test_blocks_on_one_plane_overlap_where_they_cannot_disturb_each_other():
    """Eight one-tile matmuls of one row, each weight in a MEM slice of its own: two blocks on each
    plane. A block holds its plane's shadow buffer, array and accumulators only from first use to
    last, so the next block on the plane loads its tile while the one before still multiplies and
    drains (held whole, it waited for the drain and the write after it); the emulator checks every
    install, pass and drain."""
    from isa.spec import BY_MNEMONIC

    weights = ", ".join(f"%w{i}: f16[160, 320]" for i in range(8))
    body = "".join(f"  %h{i} = matmul(%x, %w{i})\n" for i in range(8))
    adds = "".join(f"  %s{i} = add(%s{i - 1}, %h{i})\n" for i in range(1, 8))
    text = f"module m\ngraph main(%x: f16[1, 160], {weights}) -> () {{\n{body}  %s0 = add(%h0, %h0)\n{adds}  return\n}}\n"
    program, run = compile_and_check(text, "tsp")
    assert run.violations == []
    lw, acc = BY_MNEMONIC["lw"].code, BY_MNEMONIC["acc"].code
    queues = program.system.chip.queue_table()
    planes = {q.index: (q.slice, q.plane) for q in queues}
    overlaps = 0
    for plane in {(q.slice, q.plane) for q in queues if q.slice.startswith("mxm")}:
        on = [r for r in range(len(program)) if planes[int(program.queue[r])] == plane]
        loads = sorted(int(program.cycle[r]) for r in on if program.opcode[r] == lw)
        drains = sorted(int(program.cycle[r]) for r in on if program.opcode[r] == acc)
        assert len(loads) == len(drains) == 2, (plane, loads, drains)
        overlaps += loads[1] < drains[0]  # the second block's load before the first one's drain
    assert overlaps == 4, overlaps


def test_a_matmul_block_holds_its_planes_from_first_use_to_last():
    """What a block reserves of each plane is what the emulator's model of a plane needs undisturbed
    (emulator/timing.py): the shadow buffer from its first loaded row to its last install's sample
    (an install takes the rows loaded since the one before), the array from its first install's
    weights being ready to its last pass's last sample, the accumulators from its first pass's
    first result to its drain's last read."""
    from compiler.lower import Lowering

    m = parse(
        "module m\ngraph main(%x: f16[3, 480], %w: f16[480, 640]) -> (f32[3, 640]) {\n"
        "  %h = matmul(%x, %w) : f32[3, 640]\n  return %h\n}\n"
    )
    chip = named_system("tsp").chip
    low = Lowering(chip, [], {})
    g = m.graphs[0]
    low.lower_graph(g, {a.name: low.new_tensor(a.name, a.type, "input") for a in g.args})
    (job,) = [j for j in low.jobs if any(nd.mnemonic == "mm" for nd in j.nodes)]
    by_plane: dict = {}
    queues = chip.queue_table()
    for nd in job.nodes:
        if nd.mnemonic in ("lw", "iw", "mm", "acc"):
            q = queues[nd.queue]
            by_plane.setdefault((q.slice, q.plane), {}).setdefault(nd.mnemonic, []).append(nd)
    holds = {
        key[1:]: (nd.rel + off, nd.rel + off + length) for nd in job.nodes for key, off, length in nd.holds
    }
    assert len(by_plane) == 2 and len(holds) == 6, (by_plane.keys(), holds)  # two planes, three holds each
    for (mxm, plane), nodes in by_plane.items():
        side = mxm.split(".")[1]
        lw, iw, mm, acc = (nodes[k] for k in ("lw", "iw", "mm", "acc"))
        assert len(lw) == len(iw) == len(mm) == 3  # 480 rows: three tiles of 160
        assert holds["shadow", side, plane] == (lw[0].rel + 2, iw[-1].rel + 1)
        assert holds["array", side, plane] == (iw[0].rel + 20, mm[-1].rel + 1 + 3)
        assert holds["acc", side, plane] == (mm[0].rel + 24, acc[-1].rel + 3)


def test_matmuls_of_one_activation_go_each_on_a_plane_of_its_own():
    """One row times four weights of two column chunks each: a weight sits in one MEM slice (one
    port, a row per cycle), so two planes loading chunks of one weight would take turns on its
    port. The four matmuls read one activation and are ready together: each goes whole on one
    plane (its chunks one after another), the four on the four planes, four ports streaming at
    once; the values check."""
    from isa.spec import BY_MNEMONIC

    weights = ", ".join(f"%w{i}: f16[160, 640]" for i in range(4))
    body = "".join(f"  %h{i} = matmul(%x, %w{i})\n" for i in range(4))
    adds = "".join(f"  %s{i} = add(%s{i - 1}, %h{i})\n" for i in range(1, 4))
    text = f"module m\ngraph main(%x: f16[1, 160], {weights}) -> () {{\n{body}  %s0 = add(%h0, %h0)\n{adds}  return\n}}\n"
    program, _ = compile_and_check(text, "tsp")
    queues = program.system.chip.queue_table()
    ops, of = program.meta["ops"], program.meta["op_of"]
    lw = BY_MNEMONIC["lw"].code
    planes: dict[str, set] = {}
    for r in range(len(program)):
        if program.opcode[r] == lw:
            q = queues[int(program.queue[r])]
            planes.setdefault(ops[of[r]].split(" =")[0], set()).add((q.slice, q.plane))
    assert sorted(planes) == ["%h0", "%h1", "%h2", "%h3"], planes
    assert all(len(p) == 1 for p in planes.values()), planes
    assert len(set.union(*planes.values())) == 4, planes

"""The emulator on hand-written programs: values, cycle counts, every kind of timing violation,
and an exhaustive single-mutation campaign that measures how often the checker catches a change."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from emulator.run import Emulator
from isa.assembly import assemble, disassemble

RNG = np.random.default_rng(11)
W = RNG.standard_normal((8, 16)).astype(np.float16)
X = RNG.standard_normal((2, 8)).astype(np.float16)


def load(name: str):
    return assemble((ROOT / "tests" / "asm" / name).read_text(), name)


def run(p, x=X, w=W):
    return Emulator(p, {"w": w}).run("main", {"x": x})


def test_add_program_values_and_cycles():
    r = run(load("add.lpuasm"))
    assert r.violations == []
    assert np.array_equal(r.outputs[0], (X.astype(np.float32) * 2).astype(np.float16))
    # read at 0 (vector 1 leaves at 3), add emits vector 1 at 5, write lands vector 1 at 5 + 2 = 7
    assert r.cycles == 8
    assert r.busy["MEM"] == 4 and r.busy["VXM"] == 2


def test_a_program_built_in_memory_is_checked_like_a_loaded_one():
    """An instruction the ISA refuses (here an SXM op on a VXM queue; a trans cut into single
    vectors once ran silently wrong) is refused by Emulator() as load() refuses it."""
    import dataclasses

    from isa.diagnostics import LpuError
    from isa.spec import BY_MNEMONIC

    p = load("add.lpuasm")
    opcode, n = p.opcode.copy(), p.n.copy()
    k = int(np.nonzero(p.opcode == BY_MNEMONIC["add"].code)[0][0])
    opcode[k], n[k] = BY_MNEMONIC["trans"].code, 1
    with pytest.raises(LpuError, match=r"invalid program: instruction \d+: trans is a SXM instruction"):
        Emulator(dataclasses.replace(p, opcode=opcode, n=n))


def test_matmul_program_matches_numpy_bit_for_bit():
    r = run(load("matmul.lpuasm"))
    assert r.violations == []
    want = (X.astype(np.float32) @ W.astype(np.float32)).astype(np.float16)
    assert np.array_equal(r.outputs[0], want)
    assert r.busy["MXM"] == 8 + 20 + 2


def test_matmul_skips_zero_weight_lanes_exactly():
    """A pass reads an image weight row only up to its last nonzero lane; the result is still numpy's
    bit for bit, including where an infinite activation meets those zeros (inf * 0 = NaN)."""
    w = W.copy()
    w[0, 9:] = 0.0  # row 0 is zero past lane 9, row 3 entirely
    w[3, :] = 0.0
    for x in (X, np.where(np.arange(8) == 0, np.inf, X).astype(np.float16), np.where(np.arange(8) == 3, -np.inf, X).astype(np.float16)):
        r = run(load("matmul.lpuasm"), x=x, w=w)
        with np.errstate(invalid="ignore"):
            want = (x.astype(np.float32) @ w.astype(np.float32)).astype(np.float16)
        assert r.violations == []
        assert np.array_equal(r.outputs[0], want, equal_nan=True), (r.outputs[0], want)
    assert np.isnan(want[:, 9:]).all()  # the case that must not be skipped


def kinds(p, **kw):
    return sorted({v.kind for v in run(p, **kw).violations})


def edit(name: str, old: str, new: str):
    text = (ROOT / "tests" / "asm" / name).read_text()
    assert old in text, old
    return assemble(text.replace(old, new, 1), name)


def test_stream_collision():
    # a second add writes E2 at the same place and cycles as the first
    p = edit(
        "add.lpuasm",
        "     2 main       4",
        "     3 main       2    0 vxm.q1  add a=E1 b=E1 dst=E2 dt=f16 n=2 <- a:#0 b:#0\n     2 main       4",
    )
    assert "stream collision" in kinds(p)


def test_empty_stream_and_wrong_vector():
    assert kinds(edit("add.lpuasm", "     1 main       2 ", "     1 main       1 ")) == [
        "empty stream",
        "wrong vector",
    ]
    assert "wrong vector" in kinds(edit("add.lpuasm", "     2 main       4 ", "     2 main       5 "))


def test_stale_and_wrong_sram_words():
    # state program: the write issued at 5 lands at 7; a read of that word issued at 6 is too early
    early = STATE.replace(
        "     3 main       5    0 mem.w0  write addr=0 step=4 a=W0 dt=f32 n=1 <- a:#2",
        "     3 main       5    0 mem.w0  write addr=0 step=4 a=W0 dt=f32 n=1 <- a:#2\n"
        "     4 main       6    0 mem.w0  read addr=0 step=4 dst=E5 dt=f32 n=1 <- mem:#3",
    )
    one = {"x": np.ones((1, 4), np.float32)}
    assert sorted({v.kind for v in Emulator(assemble(early)).run("main", one).violations}) == [
        "stale SRAM word"
    ]
    on_time = early.replace("     4 main       6 ", "     4 main       7 ")
    assert Emulator(assemble(on_time)).run("main", one).violations == []
    assert kinds(edit("add.lpuasm", "read addr=0", "read addr=2")) == [
        "read of an unwritten word",
        "wrong SRAM word",
    ]


def test_queue_overlap():
    p = edit(
        "add.lpuasm",
        "     2 main       4    0 mem.e0",
        "     3 main       1    0 vxm.q0  nop n=2\n     2 main       4    0 mem.e0",
    )
    assert kinds(p) == ["queue overlap"]


def test_matrix_unit_not_ready_and_wrong_weights():
    late = edit("matmul.lpuasm", "     2 main      12 ", "     2 main      13 ")
    assert kinds(late) == ["matrix unit not ready"]
    two = edit(
        "matmul.lpuasm",
        "     2 main      12    0 mxm.e.q1   iw n=1",
        "     2 main      12    0 mxm.e.q1   iw n=1\n     6 main      32    0 mxm.e.q1   iw n=1",
    )
    text = disassemble(two).replace("w:#2", "w:#6")
    # the second install loads nothing, and the mm (sampling at 32, 33) still sees the first one
    assert kinds(assemble(text)) == ["empty weight install", "wrong weights"]


def test_accumulator_path():
    p = edit(
        "matmul.lpuasm",
        "mm a=E1 kof=0 dst=W0 slot=0 mode=emit dt=f16 to=f16 n=2 <- a:#3 w:#2\n"
        "     5 main      59    0 mem.e0     write addr=0 step=2 a=W0 dt=f16 n=2 <- a:#4",
        "mm a=E1 kof=0 dst=W0 slot=4 mode=acc_set dt=f16 to=f16 n=2 <- a:#3 w:#2\n"
        "     6 main      33    0 mxm.e.q2   mm a=E1 kof=0 dst=W0 slot=4 mode=acc_add dt=f16 to=f16 n=2 <- a:#7 w:#2\n"
        "     7 main      29    0 mem.e2     read addr=0 step=2 dst=E1 dt=f16 n=2 <- mem:image@0\n"
        "     8 main      58    0 mxm.e.q0   acc dst=W0 slot=4 to=f32 n=2 <- acc:#6\n"
        "     5 main      64    0 mem.e0     write addr=0 step=4 a=W0 dt=f32 n=2 <- a:#8",
    )
    text = disassemble(p).replace("output main out0 f16[2, 16]", "output main out0 f32[2, 16]")
    r = run(assemble(text))
    assert r.violations == [], [v.render() for v in r.violations]
    # each pass sums exactly and rounds once to f32; the second pass adds the same product: 2p exactly
    p_f32 = (X.astype(np.float64) @ W.astype(np.float64)).astype(np.float32)
    assert np.array_equal(r.outputs[0], 2 * p_f32)


STATE = """lpuprog 1
system tiny
entry main
state s f32[1, 4] @ 0 mem.w0 0
input main x f32[1, 4] @ 0 mem.w1 0
output main out0 f32[1, 4] @ 0 mem.w0 0
     0 main       1    0 mem.w0  read addr=0 step=4 dst=E0 dt=f32 n=1 <- mem:image@0
     1 main       0    0 mem.w1  read addr=0 step=4 dst=E1 dt=f32 n=1 <- mem:image@0
     2 main       3    0 vxm.q0  add a=E0 b=E1 dst=W0 dt=f32 n=1 <- a:#0 b:#1
     3 main       5    0 mem.w0  write addr=0 step=4 a=W0 dt=f32 n=1 <- a:#2
"""


def test_state_persists_between_runs():
    # s += x: both operands reach the VXM (x=7) at cycle 4, from x=6 and x=5
    text = STATE.replace(
        "     1 main       0    0 mem.w1  read addr=0 dst=E0",
        "     1 main       0    0 mem.w1  read addr=0 dst=E1",
    )
    emu = Emulator(assemble(text))
    one = np.array([[1, 2, 3, 4]], np.float32)
    for k in range(1, 4):
        r = emu.run("main", {"x": one})
        assert r.violations == [], [v.render() for v in r.violations]
        assert np.array_equal(r.outputs[0], k * one) and np.array_equal(emu.state["s"], k * one)
    # a state set between runs is what the next run starts from (the vectors the last run left
    # are dropped), and the mapping behaves like a dict
    emu.state["s"] = np.full((1, 4), 10, np.float32)
    r = emu.run("main", {"x": one})
    assert np.array_equal(r.outputs[0], 10 + one) and np.array_equal(emu.state["s"], 10 + one)
    assert list(emu.state) == ["s"] and len(emu.state) == 1 and dict(emu.state)["s"].dtype == np.float32


# -- the checker bites: every single mutation of the hand-written programs ----------------------


def mutations(p):
    """(description, mutated program) for every instruction: issue cycle +-1..3, each stream field
    to two other streams, each address by +-1 vector."""
    S = p.system.chip.streams_per_direction
    for j in range(len(p)):
        spec = p.spec(j)
        for d in (-3, -2, -1, 1, 2, 3):
            if p.cycle[j] + d >= 0:
                q = _copy(p)
                q.cycle[j] += d
                yield f"#{j} {spec.mnemonic} cycle {d:+d}", q
        for k, name in enumerate(spec.operands):
            kind = {"a": "stream", "b": "stream", "c": "stream", "dst": "stream", "addr": "addr"}.get(name)
            if kind == "stream":
                for other in {(p.fields[j, k] + 1) % (2 * S), (p.fields[j, k] + S) % (2 * S)}:
                    q = _copy(p)
                    q.fields[j, k] = other
                    yield f"#{j} {spec.mnemonic} {name} -> stream {other}", q
            elif kind == "addr":
                for d in (-2, 2):
                    if p.fields[j, k] + d >= 0:
                        q = _copy(p)
                        q.fields[j, k] += d
                        yield f"#{j} {spec.mnemonic} addr {d:+d}", q


def _copy(p):
    import copy

    q = copy.copy(p)
    for name in ("cycle", "fields"):
        setattr(q, name, getattr(p, name).copy())
    return q


@pytest.mark.parametrize("name", ["add.lpuasm", "matmul.lpuasm", "two_chips.lpuasm"])
def test_every_single_mutation_is_caught(name):
    p = load(name)
    clean = run(p)
    assert clean.violations == []
    caught, survivors = 0, []
    total = 0
    for what, q in mutations(p):
        total += 1
        r = run(q)
        if r.violations or not all(np.array_equal(a, b) for a, b in zip(r.outputs, clean.outputs)):
            caught += 1
        else:
            survivors.append(what)
    assert total > 20
    assert survivors == [], f"{caught}/{total} caught; survivors: {survivors}"


# -- chip to chip ------------------------------------------------------------------------------------


def test_two_chips_deliver_over_a_link_at_exact_cycles():
    r = run(load("two_chips.lpuasm"))
    assert r.violations == []
    assert np.array_equal(r.outputs[0], X)
    assert r.busy["C2C"] == 4


@pytest.mark.parametrize(
    "old, new, kind",
    [
        ("     4 main      27 ", "     4 main      26 ", "receive at the wrong cycle"),
        ("     3 main       6 ", "     3 main       5 ", "link overrun"),
        ("recv link=0 dst=E2 n=1 <- link:#1", "recv link=3 dst=E2 n=1 <- link:#1", "no such link"),
        (
            "     1 main       4    0 c2c.w.q0   send a=W1 link=0 n=1 <- a:#0",
            "     1 main       4    0 c2c.w.q0   nop n=1",
            "receive of nothing",
        ),
    ],
)
def test_link_violations(old, new, kind):
    assert kind in kinds(edit("two_chips.lpuasm", old, new))


def test_receive_buffer_overrun():
    # both vectors arrive (27, 29) before either is taken (30, 31): two waiting, the buffer holds one
    text = (ROOT / "tests" / "asm" / "two_chips.lpuasm").read_text()
    text = text.replace("     4 main      27 ", "     4 main      30 ").replace(
        "     6 main      29 ", "     6 main      31 "
    )
    assert "receive buffer overrun" in {v.kind for v in run(assemble(text)).violations}


def test_lane_maps_of_one_run_take_the_fast_path_and_agree_with_the_general_one(monkeypatch):
    """The kernel moves a lane map that shifts one run of lanes as a slice; every other map lane by
    lane. A compiled concat (perm maps of one run each) gives the same values either way."""
    import emulator.run as run_module
    from compiler import parse
    from compiler.backend import compile_module
    from isa.spec import BY_MNEMONIC
    from isa.system import named_system

    runs = run_module._runs
    maps = np.full((4, 8), -1, np.int64)
    maps[1, 2:5] = [0, 1, 2]  # lanes 2..4 from 0..2
    maps[2] = np.arange(8)[::-1]  # reversed: not one run
    maps[3, [1, 3]] = [1, 3]  # a gap: not one run
    assert runs(maps).tolist() == [[0, 0, 0], [2, 0, 3], [-1, -1, -1], [-1, -1, -1]]

    m = parse(
        "module cat\ngraph main(%a: f16[3, 5], %b: f16[3, 7]) -> (f16[3, 12]) {\n"
        "  %c = concat(%a, %b) {axis = 1}\n  %d = transpose(%c)\n  %e = transpose(%d)\n  return %e\n}\n"
    )
    p = compile_module(m, named_system("tiny"))
    assert (p.opcode == BY_MNEMONIC["perm"].code).any()
    x = {"a": RNG.standard_normal((3, 5)).astype(np.float16), "b": RNG.standard_normal((3, 7)).astype(np.float16)}
    fast = Emulator(p).run("main", x)
    monkeypatch.setattr(run_module, "_runs", lambda maps: np.full((len(maps), 3), -1, np.int64))
    slow = Emulator(p).run("main", x)
    assert fast.violations == slow.violations == []
    assert np.array_equal(fast.outputs[0], slow.outputs[0])
    assert np.array_equal(fast.outputs[0], np.concatenate([x["a"], x["b"]], axis=1))


def test_sram_of_chips_a_program_never_touches_costs_no_memory():
    """The emulator's record of who wrote each SRAM word holds only the words an entry can touch
    (one for every word of the 72 chips of a rack would be 1.2 GB)."""
    import sys

    from compiler import parse
    from compiler.backend import compile_module
    from isa.system import named_system

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/statm")

    def resident_mb() -> float:
        import os

        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    m = parse("module m\ngraph main(%x: f16[2, 8]) -> (f16[2, 8]) {\n  %y = add(%x, %x)\n  return %y\n}\n")
    p = compile_module(m, named_system("rack"))
    before = resident_mb()
    emu = Emulator(p)
    r = emu.run("main", {"x": X})
    grown = resident_mb() - before
    assert r.violations == [] and np.array_equal(r.outputs[0], (X.astype(np.float32) * 2).astype(np.float16))
    words = p.system.chips * p.system.chip.mem_slices * p.system.chip.words_per_slice
    assert words * 3 * 8 / 2**20 > 1000  # what a filled record would take, in MB
    assert grown < 200, f"{grown:.0f} MB resident after one run"


def test_value_slots_reuse_rows_only_after_the_last_reader():
    """kernel.value_slots on a made-up step list: a chain of adds, each read by the next, needs two
    rows however long it is; a value written to SRAM and read back much later keeps its row until
    that read's consumer; a write that must outlive the run (kept) is never freed; row 0 stays the
    zero row."""
    from emulator.kernel import ACTIONS, FOREVER, ZERO, value_slots  # noqa: F401

    add, read, write, nop = ACTIONS["add"], ACTIONS["read"], ACTIONS["write"], ACTIONS["nop"]
    n = 12
    action = np.full(n, add, np.int64)
    mem_kind = np.zeros(n, np.int64)
    src = np.full((n, 3), -1, np.int64)
    for s in range(1, 6):  # 0: a value; 1..5: add of the previous step to itself
        src[s, :2] = s - 1
    action[6], mem_kind[6], src[6, 0] = write, 2, 2  # step 2's value written to SRAM
    action[7] = nop
    action[8], mem_kind[8] = read, 1  # read back the word step 6 wrote
    action[9], src[9, :2] = add, 8  # uses it
    action[10], mem_kind[10], src[10, 0] = write, 2, 9  # step 9's value, kept (say, an output)
    action[11], src[11, :2] = add, 5
    none = np.full(n, -1, np.int64)
    read_from = none.copy()
    read_from[8] = 6
    kept = np.zeros(n, np.bool_)
    kept[10] = True
    slot, used = value_slots(
        action, mem_kind, src, none, none, none, none, np.zeros((0, 1), np.int64),
        none, np.zeros((0, 16), np.int64), np.zeros((0, 16), np.int64), read_from, kept,
    )  # fmt: skip
    computed = [s for s in range(n) if action[s] == add]
    assert ZERO not in slot[computed]
    # every value's row is not given to another value before its last reader has run
    last = {0: 1, 1: 2, 2: 9, 3: 4, 4: 5, 5: 11, 9: n, 11: 11}
    for a in computed:
        for b in computed:
            if a < b <= last[a]:
                assert slot[a] != slot[b], (a, b)
    assert used <= 5  # zero row + at most 4 live values (2, the chain's two, 9 or 11)

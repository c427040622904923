"""Transposes through the switch's transposer (`trans`): which moves use it, that values are exact, and
that the checker follows a transposer's input read in pieces (isa/program.py: a stream source past
the end of its row continues into the next piece of the same instruction)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler import parse
from compiler.backend import compile_module
from emulator.run import Emulator
from isa.spec import BY_MNEMONIC
from isa.system import SystemConfig, named_system
from lpu.api import check_outputs
from lpu.arrays import random_inputs

TRANS = BY_MNEMONIC["trans"].code


def run_transpose(shape, perm, system="tsp", chip=None):
    out = [shape[p] for p in perm]
    text = (
        f"module m\ngraph main(%x: f32{list(shape)}) -> (f32{out}) {{\n"
        f"  %t = transpose(%x) {{perm = {list(perm)}}}\n  return %t\n}}\n"
    )
    m = parse(text)
    sys_ = named_system(system)
    if chip is not None:
        sys_ = SystemConfig("custom", sys_.chip.replace(**chip))
    program = compile_module(m, sys_, {})
    inputs = random_inputs(m, m.graphs[0], 3)
    run = Emulator(program).run("main", inputs)
    assert run.violations == [], [v.render() for v in run.violations[:3]]
    want = np.transpose(inputs["x"], perm)
    assert np.array_equal(run.outputs[0], want)  # a transpose moves values: bit for bit
    assert check_outputs(program, "main", inputs, run.outputs).ok
    return program


@pytest.mark.parametrize(
    "shape, perm",
    [((16, 64), (1, 0)), ((16, 3, 40), (1, 2, 0)), ((16, 320), (1, 0)), ((16, 4, 48), (1, 2, 0))]
    + [((40, 32), (1, 0)), ((64, 2, 32), (1, 2, 0)), ((200, 48), (1, 0)), ((17, 16), (1, 0))],
)
def test_columns_go_through_the_transposer(shape, perm):
    """Up to 16 rows: one trans per 16 output vectors; longer columns: one per block of 16 rows
    (a short last block overlapping the one before), the blocks then added."""
    program = run_transpose(shape, perm)
    rows = program.opcode == TRANS
    assert rows.any() and (program.n[rows] == 16).all()
    # a trans per 16 output vectors and block: far fewer than a read, perm and add per element
    out_vectors = int(np.prod([shape[p] for p in perm[:-1]]))
    blocks = -(-shape[perm[-1]] // 16)
    assert rows.sum() <= -(-out_vectors // 16) * blocks
    assert len(program) < out_vectors * shape[perm[-1]]


@pytest.mark.parametrize(
    "shape, perm", [((8, 32), (1, 0)), ((12, 2, 48), (1, 2, 0)), ((16, 20, 3), (1, 0, 2))]
)
def test_other_moves_are_exact_without_it(shape, perm):
    """Columns of sources with fewer than 16 vectors to read and row moves do not use the
    transposer; they are as exact."""
    program = run_transpose(shape, perm)
    assert not (program.opcode == TRANS).any()


def test_tiny_chip_transposes_too():
    program = run_transpose((16, 2, 16), (1, 2, 0), "tiny")  # 16 lanes: columns of up to 16
    assert (program.opcode == TRANS).any()


def test_long_columns_fold_a_few_blocks_at_a_time():
    """Two VXM queues: the blocks of a 100-row column are added two at a time, each addition's
    terms on slices of their own."""
    program = run_transpose((100, 2, 32), (1, 2, 0), chip={"vxm_alu_queues": 2})
    assert (program.opcode == TRANS).sum() == 4 * 7  # 4 groups of 16 output vectors, 7 blocks


PIECES = """module m
graph main(%x: f32[8, 32], %y: f32[8, 32]) -> (f32[32, 16]) {
  %p = add(%x, %x)
  %q = mul(%y, %y)
  %c = concat(%p, %q) {axis = 0}
  %t = transpose(%c)
  return %t
}
"""


@pytest.fixture(scope="module")
def pieces():
    """A transpose of 16 rows written by two instructions (a concat of two results): the read
    feeding the trans is cut into two pieces."""
    m = parse(PIECES)
    return m, compile_module(m, named_system("tsp"), {})


def _split_trans(p):
    """(trans row, its input's first read row) for trans whose input read is in pieces."""
    out = []
    for r in np.nonzero(p.opcode == TRANS)[0]:
        src = int(p.src[r, 0])
        if p.n[src] < 16:
            out.append((int(r), src))
    return out


def test_a_transpose_of_rows_written_by_two_instructions_reads_them_in_pieces(pieces):
    _, p = pieces
    split = _split_trans(p)
    assert split, "no trans took its input from a read in pieces"
    r, src = split[0]
    # the pieces: consecutive rows of the same read on the same queue, issued back to back
    total, row = 0, src
    while total < 16:
        assert p.opcode[row] == BY_MNEMONIC["read"].code and p.queue[row] == p.queue[src]
        assert p.cycle[row] == p.cycle[src] + total
        total += int(p.n[row])
        row += 1
    assert total == 16


def _pieces_run(m, p):
    inputs = random_inputs(m, m.graphs[0], 5)
    run = Emulator(p).run("main", inputs)
    return run, inputs


def test_checker_follows_the_pieces_and_bites(pieces):
    m, p = pieces
    run, inputs = _pieces_run(m, p)
    assert run.violations == []
    x, y = inputs["x"].astype(np.float32), inputs["y"].astype(np.float32)
    assert np.array_equal(run.outputs[0], np.concatenate([x + x, y * y]).T)
    r, src = _split_trans(p)[0]
    # the trans names the wrong vector of its pieced input: caught
    off = p.src_off.copy()
    off[r, 0] += 1
    bad, _ = _pieces_run(m, dataclasses.replace(p, src_off=off))
    assert any(v.kind == "wrong vector" and v.instruction == r for v in bad.violations)
    # the second piece issued a cycle late: the trans samples a gap, caught
    cycle = p.cycle.copy()
    cycle[src + 1] += 1
    bad, _ = _pieces_run(m, dataclasses.replace(p, cycle=cycle))
    assert any(v.instruction == r for v in bad.violations)


@pytest.mark.parametrize("S, H, D", [(24, 2, 16), (8, 4, 40), (6, 3, 8)])
def test_heads_split_off_rows_move_many_vectors_per_instruction(S, H, D):
    """Heads split off every row of a cache ([S, H * D] -> [S, H, D], then [H, S, D]): each output
    vector of the reshape is one lane map of a source vector, evenly spaced, so each head is one
    read, one perm and one write of S vectors, not S of each."""
    text = (
        f"module m\ngraph main(%x: f32[{S}, {H * D}]) -> (f32[{H}, {S}, {D}]) {{\n"
        f"  %r = reshape(%x) : f32[{S}, {H}, {D}]\n"
        f"  %t = transpose(%r) {{perm = [1, 0, 2]}}\n  return %t\n}}\n"
    )
    m = parse(text)
    program = compile_module(m, named_system("tsp"), {})
    inputs = random_inputs(m, m.graphs[0], 3)
    run = Emulator(program).run("main", inputs)
    assert run.violations == []
    assert np.array_equal(run.outputs[0], inputs["x"].reshape(S, H, D).transpose(1, 0, 2))
    perms = program.opcode == BY_MNEMONIC["perm"].code
    assert 0 < perms.sum() <= H and (program.n[perms] == S).all()

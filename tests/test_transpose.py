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
from models.gpt2 import GPT2Config, module_text, random_weights

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


@pytest.fixture(scope="module")
def decode():
    """A GPT-2 decode step: the key cache is transposed every step, and its rows were written by
    different instructions, so the read feeding each trans is cut into pieces."""
    c = GPT2Config(1, 64, 4, 128, 64, 16)
    m, w = parse(module_text(c)), random_weights(c, 0)
    return compile_module(m, named_system("tsp"), w)


def _split_trans(p):
    """(trans row, its input's first read row) for trans whose input read is in pieces."""
    e = p.entries.index("decode")
    out = []
    for r in np.nonzero((p.opcode == TRANS) & (p.entry == e))[0]:
        src = int(p.src[r, 0])
        if p.n[src] < 16:
            out.append((int(r), src))
    return out


def test_decode_transposes_a_key_cache_read_in_pieces(decode):
    split = _split_trans(decode)
    assert split, "no trans took its input from a read in pieces"
    r, src = split[0]
    # the pieces: consecutive rows of the same read on the same queue, issued back to back
    total, row = 0, src
    while total < 16:
        assert decode.opcode[row] == BY_MNEMONIC["read"].code and decode.queue[row] == decode.queue[src]
        assert decode.cycle[row] == decode.cycle[src] + total
        total += int(decode.n[row])
        row += 1
    assert total == 16


def _decode_run(p):
    emu = Emulator(p)
    ids = np.zeros(16, np.int32)
    ids[:3] = [1, 2, 3]
    assert emu.run("prefill", {"ids": ids, "len": np.int32(3)}).violations == []
    return emu.run("decode", {"tok": np.array([4], np.int32), "pos": np.int32(3)})


def test_checker_follows_the_pieces_and_bites(decode):
    assert _decode_run(decode).violations == []
    r, src = _split_trans(decode)[0]
    # the trans names the wrong vector of its pieced input: caught
    off = decode.src_off.copy()
    off[r, 0] += 1
    bad = _decode_run(dataclasses.replace(decode, src_off=off))
    assert any(v.kind == "wrong vector" and v.instruction == r for v in bad.violations)
    # the second piece issued a cycle late: the trans samples a gap, caught
    cycle = decode.cycle.copy()
    cycle[src + 1] += 1
    bad = _decode_run(dataclasses.replace(decode, cycle=cycle))
    assert any(v.instruction == r for v in bad.violations)

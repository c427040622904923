"""The program file and its listing: deterministic bytes, refusal of damaged files, and
disassemble -> assemble giving back the same program."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from isa.assembly import assemble, disassemble
from isa.diagnostics import LpuError
from isa.program import from_bytes, to_bytes

ASM = sorted((ROOT / "tests" / "asm").glob("*.lpuasm"))


def program(name: str):
    path = ROOT / "tests" / "asm" / name
    return assemble(path.read_text(), str(path))


def with_image(p):
    """The matmul program with its weights in the SRAM image (data lines)."""
    rng = np.random.default_rng(3)
    text = disassemble(p)
    lines = [f"data 0 mem.e3 {2 * k} : " + " ".join(repr(float(v)) for v in
                                                   rng.standard_normal(16).astype(np.float16)) for k in range(8)]
    return assemble(text.replace("#   id", "\n".join(lines) + "\n#   id", 1))


@pytest.mark.parametrize("path", ASM, ids=[p.stem for p in ASM])
def test_listing_round_trip(path):
    p = assemble(path.read_text(), str(path))
    text = disassemble(p)
    again = assemble(text, "again")
    assert disassemble(again) == text
    assert to_bytes(again) == to_bytes(p)


def test_listing_round_trip_with_image_data():
    p = with_image(program("matmul.lpuasm"))
    assert len(p.image_word) == 8
    text = disassemble(p, data=True)
    assert to_bytes(assemble(text)) == to_bytes(p)
    assert "not shown" in disassemble(p, data=False)


def test_file_round_trip_is_byte_identical_and_deterministic(tmp_path):
    p = with_image(program("matmul.lpuasm"))
    data = to_bytes(p)
    assert to_bytes(from_bytes(data)) == data
    # another process, another hash seed: same bytes
    code = ("import sys; from isa.assembly import assemble; from isa.program import to_bytes; "
            "sys.stdout.buffer.write(to_bytes(assemble(open(sys.argv[1]).read(), sys.argv[1])))")
    path = str(ROOT / "tests" / "asm" / "matmul.lpuasm")
    outs = [subprocess.run([sys.executable, "-c", code, path], capture_output=True, cwd=ROOT,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")]
    assert outs[0] == outs[1] == to_bytes(program("matmul.lpuasm"))


def test_truncated_file_is_refused():
    data = to_bytes(program("matmul.lpuasm"))
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(LpuError, match="not a program file|damaged|lacks"):
            from_bytes(data[:cut], "p.lpuprog")


def _rewrite(data: bytes, name: str, change) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            blob = src.read(info.filename)
            dst.writestr(info, change(blob) if info.filename == name else blob)
    return out.getvalue()


def test_tampered_table_is_refused():
    data = to_bytes(program("matmul.lpuasm"))

    def flip(blob: bytes) -> bytes:
        return blob[:-1] + bytes([blob[-1] ^ 1])

    with pytest.raises(LpuError, match="'cycle' table does not match its checksum: the file was modified"):
        from_bytes(_rewrite(data, "cycle.npy", flip), "p.lpuprog")


def test_other_version_and_format_are_refused():
    data = to_bytes(program("matmul.lpuasm"))

    def version(blob: bytes) -> bytes:
        h = json.loads(blob)
        h["version"] = 99
        return json.dumps(h).encode()

    with pytest.raises(LpuError, match="written in format version 99; this lpu reads version 1"):
        from_bytes(_rewrite(data, "header.json", version), "p.lpuprog")
    with pytest.raises(LpuError, match="does not say format 'lpuprog'"):
        from_bytes(_rewrite(data, "header.json", lambda b: b'{"format": "zip"}'), "p.lpuprog")
    with pytest.raises(LpuError, match="header is damaged"):
        from_bytes(_rewrite(data, "header.json", lambda b: b"{not json"), "p.lpuprog")


def test_semantically_bad_table_is_refused():
    p = program("add.lpuasm")
    p.fields[1, 2] = 99  # dst stream out of range
    with pytest.raises(LpuError, match="invalid program: instruction 1: add field dst = 99 is out of range"):
        from_bytes(to_bytes(p), "p.lpuprog")
    p = program("add.lpuasm")
    p.queue[1] = 0  # a C2C queue
    with pytest.raises(LpuError, match="add is a VXM instruction but queue c2c.w.q0 belongs to a C2C slice"):
        from_bytes(to_bytes(p), "p.lpuprog")


BASE = (ROOT / "tests" / "asm" / "add.lpuasm").read_text()


@pytest.mark.parametrize("old, new, message", [
    ("lpuprog 1", "lpuprog 2", "this listing is format '2'; this lpu reads 1"),
    ("system tiny", "system galaxy", "unknown system 'galaxy'"),
    ("vxm.q0 ", "vxm.q9 ", "'vxm.q9' is not a queue of a tiny chip"),
    ("add a=E1", "fadd a=E1", "unknown instruction 'fadd'"),
    ("dst=E2", "dst=E9", "dst must be a stream E0..E7 or W0..W7, got 'E9'"),
    ("dt=f16 n=2 <- a:#0 b:#0", "dt=f8 n=2 <- a:#0 b:#0", "dt must be a dtype"),
    ("dst=E2 dt=f16", "dst=E2 dst=E3 dt=f16", "field 'dst' is given twice"),
    ("add a=E1 b=E1", "add a=E1", "add needs field b"),
    ("b:#0\n", "c:#0\n", "expected SLOT:SOURCE with SLOT one of a, b"),
    ("b:#0\n", "b:#x\n", "a source is #ID, #ID+K, #ID*S+K, image@WORD or unchecked"),
    ("     2 main", "     1 main", "instruction id 1 appears twice"),
    ("     1 main       2", "     1 other       2", "unknown entry 'other'"),
    ("write addr=0", "write addr=99999", "field addr = 99999 is out of range"),
    ("read addr=0 step=2 dst=E1 dt=f16 n=2", "read addr=0 step=2 dst=E1 dt=f16 n=0", "repeat count n = 0"),
    ("input main x", "input x", "expected 'ROLE GRAPH NAME TYPE @ CHIP SLICE WORD [part AXIS:START:STOP]'"),
    ("entry main", "entry main\nbogus line", "unknown line kind 'bogus'"),
    ("entry main", "entry main\nmap 0 : " + " ".join(["16"] * 16), "map 0 must give each of the 16 lanes"),
    ("input main x f16[2, 8] @ 0 mem.w0 0", "input main x f16[2, 8] @ 0 mem.w0 0 part 1:0:4",
     "'part 1:0:4' must name distinct axes of f16[2, 8], each with a range as long as that axis"),
    ("input main x f16[2, 8] @ 0 mem.w0 0", "input main x f16[2, 8] @ 0 mem.w0 0 part 1:0:8,1:8:16",
     "'part 1:0:8,1:8:16' must name distinct axes"),
])
def test_assembler_errors_are_located(old, new, message):
    assert old in BASE
    text = BASE.replace(old, new, 1)
    with pytest.raises(LpuError) as e:
        assemble(text, "bad.lpuasm")
    rendered = e.value.render()
    assert message in rendered, rendered
    assert rendered.startswith("bad.lpuasm:")


def test_assembler_refuses_an_empty_listing():
    with pytest.raises(LpuError, match="empty listing"):
        assemble("", "e.lpuasm")
    with pytest.raises(LpuError, match="names no system"):
        assemble("lpuprog 1\nentry main\n", "e.lpuasm")


def test_a_repeats_table_round_trips_and_a_malformed_one_is_refused():
    """The table of repeated blocks (a timing-only program stores alike stages once) is part of the
    file: written, read back byte for byte, and checked like the instructions."""
    import dataclasses

    from isa.program import Repeats

    p = program("matmul.lpuasm")

    def rep(**change):
        cols = dict(first=[0], rows=[len(p)], count=[2], cycles=[100], src_lo=[0], chip_step=[0])
        cols.update(change)
        return dataclasses.replace(p, repeats=Repeats(**{k: np.array(v, np.int64) for k, v in cols.items()}))

    good = rep()
    data = to_bytes(good)
    back = from_bytes(data)
    assert to_bytes(back) == data and back.instructions() == 3 * len(p)
    assert len(back.expanded()) == 3 * len(p) and back.expanded().cycle[len(p)] == p.cycle[0] + 100
    assert back.length() == p.length() + 200
    for change, message in [
        (dict(count=[0]), f"repeated block 0 (rows 0..{len(p) - 1}) is malformed"),
        (dict(rows=[len(p) + 1]), "is malformed"),
        (dict(chip_step=[1]), "copies of repeated block 0 fall outside the 1 chips"),
        (dict(first=[0, 0], rows=[1, 1], count=[1, 1], cycles=[0, 0], src_lo=[0, 0], chip_step=[0, 0]),
         "repeated block 1 overlaps or precedes block 0"),
        (dict(count=[1, 1]), "columns have different lengths"),
    ]:  # fmt: skip
        with pytest.raises(LpuError, match="invalid program: .*" + re.escape(message)):
            from_bytes(to_bytes(rep(**change)), "p.lpuprog")


def test_older_files_without_a_repeats_table_still_load():
    data = to_bytes(program("matmul.lpuasm"))
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename.startswith("repeat_"):
                continue
            blob = src.read(info.filename)
            if info.filename == "header.json":
                header = json.loads(blob)
                header["arrays"] = {k: v for k, v in header["arrays"].items() if not k.startswith("repeat_")}
                blob = json.dumps(header).encode()
            dst.writestr(info, blob)
    p = from_bytes(out.getvalue())
    assert len(p.repeats) == 0 and len(p) == len(program("matmul.lpuasm"))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_property_repeated_blocks_expand_and_index_consistently(data):
    """Random tables of repeated blocks over a small program: the expanded program has
    `instructions()` rows, stored rows map to expanded rows and back, every expanded row is the
    stored row `stored_index` names (same op, queue and count; chip and cycle moved by its copy)."""
    import dataclasses

    from isa.program import Repeats

    p = program("matmul.lpuasm")
    n = len(p)
    cuts = sorted(data.draw(st.sets(st.integers(0, n), max_size=4), label="cuts"))
    blocks = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    counts = [data.draw(st.integers(1, 3), label="count") for _ in blocks]
    r = Repeats(
        first=np.array([a for a, _ in blocks], np.int64),
        rows=np.array([b - a for a, b in blocks], np.int64),
        count=np.array(counts, np.int64),
        cycles=np.array([data.draw(st.integers(0, 50), label="cycles") for _ in blocks], np.int64),
        src_lo=np.full(len(blocks), 1 << 40, np.int64),
        chip_step=np.zeros(len(blocks), np.int64),
    )
    q = dataclasses.replace(p, repeats=r)
    x = q.expanded()
    assert len(x) == q.instructions() == n + sum((b - a) * k for (a, b), k in zip(blocks, counts))
    stored = np.arange(n)
    assert np.array_equal(q.stored_index(q.real_index(stored)), stored)
    back = q.stored_index(np.arange(len(x)))
    assert np.array_equal(x.opcode, p.opcode[back]) and np.array_equal(x.queue, p.queue[back])
    assert np.array_equal(x.n, p.n[back])
    assert q.length() == x.length()

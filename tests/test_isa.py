"""The ISA table, chip presets and the generated reference."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from conftest import ROOT

from isa import chip as chipmod
from isa import spec
from isa.docs import render


def test_generated_reference_is_up_to_date():
    on_disk = (ROOT / "docs" / "isa.md").read_text()
    assert on_disk == render(), "docs/isa.md is stale: run `make docs`"


def test_reference_lists_every_opcode_and_field():
    text = render()
    for s in spec.OPS:
        assert f"`{s.mnemonic}`" in text
    for f in spec.FIELDS:
        assert f"`{f}`" in text


def test_table_covers_the_categories_later_work_needs():
    have = {(s.unit, s.mnemonic) for s in spec.OPS}
    need = {
        spec.Unit.MEM: {"read", "write", "gather", "scatter"},
        spec.Unit.VXM: {"add", "mul", "exp", "tanh", "rsqrt", "cvt", "sel", "erf"},
        spec.Unit.MXM: {"lw", "iw", "mm", "acc"},
        spec.Unit.SXM: {"shift", "perm", "trans", "lred"},
        spec.Unit.C2C: {"send", "recv"},
        spec.Unit.ICU: {"nop", "sync", "notify"},
    }
    for unit, names in need.items():
        assert names <= {m for u, m in have if u is unit}, unit


def test_timing_contract_fields():
    mm = spec.BY_MNEMONIC["mm"]
    assert mm.inputs == ("a",) and mm.output == "dst"
    assert mm.dfunc > mm.dskew
    assert spec.BY_MNEMONIC["write"].output is None
    assert spec.BY_MNEMONIC["iw"].busy_cycles(1) == 20
    assert spec.BY_MNEMONIC["read"].busy_cycles(7) == 7
    assert spec.BY_CODE[spec.BY_MNEMONIC["add"].code].mnemonic == "add"


def _row(**changes):
    base = spec.BY_MNEMONIC["add"]
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("bad, message", [
    (_row(mnemonic="Add"), "lower-case"),
    (_row(code=0x10), "already used"),
    (_row(code=0), "outside"),
    (_row(operands=("a", "b", "dst", "dt", "zz")), "unknown operand field"),
    (_row(operands=("a", "a", "dst", "dt")), "appears twice"),
    (_row(operands=("a", "b", "dst", "dt", "idx"), dfunc=1), "must exceed dskew"),
    (_row(dskew=-1), "negative"),
    (_row(busy_fixed=0, busy_per_vector=0), "occupy"),
    (_row(operands=("a", "b", "dst")), "element type"),
    (_row(semantics="  "), "semantics"),
    (_row(unit="VXM"), "not a Unit"),
])
def test_validation_rejects_inconsistent_rows(bad, message):
    table = tuple(s for s in spec.OPS if s.mnemonic != "add") + (bad,)
    with pytest.raises(spec.ISATableError, match=message):
        spec.validate(table)


def test_duplicate_mnemonic_rejected():
    with pytest.raises(spec.ISATableError, match="appears twice"):
        spec.validate(spec.OPS + (_row(code=0xFE),))


def test_shipped_table_is_valid():
    spec.validate(spec.OPS)  # also runs on import; this keeps the call visible


def test_tsp_preset_matches_published_numbers():
    tsp = chipmod.TSP
    assert tsp.lanes == 320 and tsp.superlanes == 20
    assert tsp.streams_per_direction == 32
    assert tsp.mem_slices == 88 and tsp.sram_bytes == 220 * 2**20
    assert tsp.words_per_slice == 8192  # 2 banks x 4096 words per tile
    assert 2 * tsp.mxm_planes_per_hemisphere == 4
    assert (tsp.mxm_k("i8"), tsp.mxm_k("f16"), tsp.mxm_k("bf16")) == (320, 160, 160)
    assert tsp.clock_mhz == 900
    # the ICU's 144 queues: 2 x (44 MEM + 14 SXM + 6 MXM) + 16 VXM, plus our C2C queues
    assert tsp.total_queues() - tsp.c2c_links == 144


def test_layout_order_and_positions():
    tiny = chipmod.TINY
    units = [s.unit.value for s in tiny.slices()]
    k = tiny.mem_slices_per_hemisphere
    assert units == ["C2C", "MXM", "SXM"] + ["MEM"] * k + ["VXM"] + ["MEM"] * k + ["SXM", "MXM", "C2C"]
    assert [s.x for s in tiny.slices()] == list(range(len(units)))
    assert tiny.position("vxm") - tiny.position("mem.w0") == 1
    assert tiny.position("mem.e0") - tiny.position("vxm") == 1


@pytest.mark.parametrize("changes, key", [
    ({"lanes": 0}, "lanes"),
    ({"lanes": 100}, "lanes"),
    ({"superlane_lanes": 8, "lanes": 16}, "superlane_lanes"),
    ({"mem_slice_bytes": 1000}, "mem_slice_bytes"),
    ({"mxm_k_i8": 400}, "mxm_k_i8"),
    ({"mxm_k_f16": 320, "mxm_k_i8": 160}, "mxm_k_f16"),
    ({"c2c_links": 3}, "c2c_links"),
    ({"clock_mhz": 0}, "clock_mhz"),
    ({"streams_per_direction": 2.5}, "streams_per_direction"),
])
def test_impossible_chip_parameters_name_the_key(changes, key):
    with pytest.raises(chipmod.ChipConfigError) as e:
        chipmod.TSP.replace(**changes)
    assert e.value.key == key


def test_isa_module_imports_standalone():
    # isa must work with nothing else of ours importable.
    code = ("import sys; sys.modules['compiler'] = None; sys.modules['emulator'] = None; "
            "sys.modules['lpu'] = None; import isa, isa.docs; print(len(isa.OPS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(spec.OPS)

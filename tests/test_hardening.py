"""No input reaches the user as a traceback: random and mutated IR text, program files, system files
and weight files are either accepted or refused with one located `error:` (LpuError), never with
another exception. CI runs a bounded number of cases; `benchmarks/fuzz.py` runs many thousands."""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import parse
from compiler.backend import compile_module
from isa.diagnostics import LpuError
from isa.program import from_bytes, to_bytes
from isa.system import named_system, parse_system
from lpu.cli import main

SEEDS = [
    (ROOT / "examples" / "mlp.lpu").read_text(),
    (ROOT / "examples" / "gpt_block.lpu").read_text(),
    (ROOT / "tests" / "ir" / "kv_decode.lpu").read_text(),
]
SMALL = """module mlp
param @w1 : f16[32, 48]
param @w2 : f16[48, 32]
graph main(%x: f16[4, 32]) -> (f16[4, 32]) {
  %h = matmul(%x, @w1)
  %a = gelu(%h)
  %y = matmul(%a, @w2)
  return %y
}
"""
TOML = (
    '[chip]\npreset = "tiny"\nlanes = 16\n\n[system]\nchips = 4\nlinks = [[0, 1], [1, 2], [2, 3]]\n'
    "link_latency_cycles = 30\n"
)


@st.composite
def mutated_text(draw, seeds: list[str]) -> str:
    """A valid text with a few random edits: characters deleted, duplicated, replaced or inserted,
    lines swapped, the file cut short."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        k = draw(st.integers(0, len(text) - 1))
        edit = draw(st.sampled_from(["delete", "dup", "replace", "insert", "cut", "swap"]))
        if edit == "delete":
            text = text[:k] + text[k + draw(st.integers(1, 8)) :]
        elif edit == "dup":
            text = text[:k] + text[k : k + 20] + text[k:]
        elif edit == "replace":
            text = text[:k] + draw(st.characters()) + text[k + 1 :]
        elif edit == "insert":
            text = (
                text[:k]
                + draw(
                    st.sampled_from(["%", "@", "{", "}", "[", "]", ":", "-1", "9" * 30, "\x00", "é", "\n"])
                )
                + text[k:]
            )
        elif edit == "cut":
            text = text[:k]
        else:
            lines = text.splitlines(keepends=True)
            if len(lines) > 2:
                a, b = sorted(draw(st.lists(st.integers(0, len(lines) - 1), min_size=2, max_size=2)))
                lines[a], lines[b] = lines[b], lines[a]
                text = "".join(lines)
    return text


def accepted_or_refused(fn, *args) -> None:
    try:
        fn(*args)
    except LpuError as e:
        text = e.render()
        assert "error:" in text and "Traceback" not in text


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        mutated_text(SEEDS), st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
    )
)
def test_property_parser_never_crashes(text):
    accepted_or_refused(parse, text, "fuzz.lpu")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_property_non_utf8_and_random_bytes_through_the_cli(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("f") / "x.lpu"
    path.write_bytes(data)
    try:
        code = main(["check", str(path)])
    except SystemExit as e:  # argparse never sees these bytes; a usage error would be a bug here
        raise AssertionError(f"exited {e.code}") from None
    assert code in (0, 1)


@pytest.fixture(scope="module")
def program_bytes() -> bytes:
    m = parse(SMALL)
    return to_bytes(compile_module(m, named_system("tiny"), None))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_damaged_program_files_are_refused_cleanly(program_bytes, data):
    raw = bytearray(program_bytes)
    edit = data.draw(st.sampled_from(["flip", "cut", "zero", "garbage"]))
    if edit == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            k = data.draw(st.integers(0, len(raw) - 1))
            raw[k] ^= 1 << data.draw(st.integers(0, 7))
    elif edit == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif edit == "zero":
        k = data.draw(st.integers(0, len(raw) - 1))
        raw[k : k + 64] = bytes(min(64, len(raw) - k))
    else:
        raw = bytearray(data.draw(st.binary(max_size=200)))
    try:
        q = from_bytes(bytes(raw), "x.lpuprog")
    except LpuError as e:
        assert "error:" in e.render()
    else:  # a flip in zip bookkeeping that changes nothing: never a different program
        assert to_bytes(q) == program_bytes


def tampered(program_bytes: bytes, name: str, content: bytes) -> bytes:
    """The program zip with one member replaced (its checksum no longer matches, or matches a lie)."""
    src = zipfile.ZipFile(io.BytesIO(program_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info.filename, content if info.filename == name else src.read(info.filename))
    return out.getvalue()


@pytest.mark.parametrize(
    "member, content, message",
    [
        ("header.json", b"{", "header is damaged"),
        ("header.json", b"[]", "not a program file"),
        ("cycle.npy", b"\x93NUMPY", "checksum"),
    ],
)
def test_tampered_program_members_name_the_problem(program_bytes, member, content, message):
    with pytest.raises(LpuError, match=message):
        from_bytes(tampered(program_bytes, member, content), "x.lpuprog")


@settings(max_examples=300, deadline=None)
@given(mutated_text([TOML]))
def test_property_system_files_never_crash(text):
    accepted_or_refused(parse_system, text.encode("utf-8", "surrogatepass"), "sys.toml")


def test_weights_files_with_missing_extra_or_misshapen_arrays(tmp_path, capsys):
    model = tmp_path / "mlp.lpu"
    model.write_text(SMALL)
    m = parse(SMALL)
    good = {g.name: np.zeros(g.type.shape, np.float32) for g in m.params}
    cases = {
        "missing": {k: v for k, v in list(good.items())[1:]},
        "extra": good | {"bogus": np.zeros(3, np.float32)},
        "shape": good | {next(iter(good)): np.zeros((1, 2, 3), np.float32)},
        "dtype": good | {next(iter(good)): np.array(["a"] * 4)},
    }
    for what, arrays in cases.items():
        path = tmp_path / f"{what}.npz"
        np.savez(path, **arrays)
        code = main(["compile", str(model), "-w", str(path), "-o", str(tmp_path / "x.lpuprog")])
        err = capsys.readouterr().err
        assert code == 1 and "error:" in err and "Traceback" not in err, (what, err)
        assert str(path) in err or path.name in err, (what, err)
        assert not (tmp_path / "x.lpuprog").exists()  # nothing half-written
    np.savez(tmp_path / "good.npz", **good)
    assert (
        main(["compile", str(model), "-w", str(tmp_path / "good.npz"), "-o", str(tmp_path / "x.lpuprog")])
        == 0
    )
    capsys.readouterr()
    (tmp_path / "x.lpuprog").unlink()
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert (
        main(["compile", str(model), "-w", str(tmp_path / "junk.npz"), "-o", str(tmp_path / "x.lpuprog")])
        == 1
    )
    assert "junk.npz" in capsys.readouterr().err


def test_nothing_loads_data_with_pickle_or_eval():
    offenders = []
    for path in (
        list((ROOT / "isa").rglob("*.py"))
        + list((ROOT / "compiler").rglob("*.py"))
        + list((ROOT / "emulator").rglob("*.py"))
        + list((ROOT / "lpu").rglob("*.py"))
        + list((ROOT / "models").rglob("*.py"))
    ):
        text = path.read_text()
        for pattern in (
            r"\bimport pickle\b",
            r"\bpickle\.load",
            r"allow_pickle\s*=\s*True",
            r"(?<![\w.])eval\(",
            r"\bexec\(",
        ):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert offenders == []


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_property_the_fast_program_check_is_never_less_strict_than_the_loop(program_bytes, data):
    """`check` decides most programs with whole-column numpy tests and sends doubtful ones through the
    per-instruction loop: on damaged tables (a random value in a random cell) both verdicts agree."""
    import isa.program as prog

    p = from_bytes(program_bytes, "x.lpuprog")
    table = data.draw(
        st.sampled_from(["fields", "src", "src_off", "src_step", "cycle", "n", "queue", "opcode", "chip"])
    )
    a = getattr(p, table).copy()
    flat = a.reshape(-1)
    k = data.draw(st.integers(0, len(flat) - 1))
    flat[k] = data.draw(st.sampled_from([-5, -4, -1, 0, 1, 2, 15, 16, 17, 63, 64, 1 << 20, int(flat[k]) + 1]))
    setattr(p, table, a)

    def verdict() -> str | None:
        try:
            prog.check(p)
        except prog.ProgramError as e:
            return e.message
        return None

    fast = verdict()
    real = prog._all_valid
    prog._all_valid = lambda _p: False
    try:
        slow = verdict()
    finally:
        prog._all_valid = real
    assert fast == slow


def test_input_files_with_wrong_shapes_dtypes_or_names_are_refused(tmp_path, capsys):
    model = tmp_path / "mlp.lpu"
    model.write_text(SMALL)
    prog = tmp_path / "mlp.lpuprog"
    assert main(["compile", str(model), "--random-weights", "0", "-o", str(prog)]) == 0
    capsys.readouterr()
    cases = {
        "shape": {"x": np.zeros((4, 31), np.float32)},
        "missing": {},
        "extra": {"x": np.zeros((4, 32), np.float32), "y": np.zeros(3, np.float32)},
        "dtype": {"x": np.array([["a"] * 32] * 4)},
    }
    for what, arrays in cases.items():
        path = tmp_path / f"{what}.npz"
        np.savez(path, **arrays)
        out = tmp_path / "out.npz"
        code = main(["run", str(prog), "--inputs", str(path), "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 1 and "error:" in err and "Traceback" not in err, (what, err)
        assert path.name in err, (what, err)
        assert not out.exists()
    np.savez(tmp_path / "good.npz", x=np.zeros((4, 32), np.float32))
    assert main(["run", str(prog), "--inputs", str(tmp_path / "good.npz"), "--check"]) == 0

"""The command line: subcommands, exit codes, array files, and messages that name the file."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from compiler import parse_file
from compiler.reference import Reference
from isa.docs import render
from lpu.cli import main

MLP = str(ROOT / "examples" / "mlp.lpu")
KV = str(ROOT / "tests" / "ir" / "kv_decode.lpu")


def cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("check", "eval", "isa", "system"):
        assert f"    {name}" in out


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["eval", MLP, "--seed", "many"])
    assert e.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_check_prints_canonical_ir(capsys):
    rc, out, err = cli(capsys, "check", MLP)
    assert rc == 0 and err == ""
    assert out.startswith("module mlp\n\nparam @w1 : f16[256, 1024]\n")
    assert "  %h = matmul(%n, @w1) : f16[8, 1024]\n" in out


def test_isa_prints_the_reference(capsys):
    rc, out, _ = cli(capsys, "isa")
    assert rc == 0 and out == render()


def test_system_describes_presets_and_files(capsys, tmp_path):
    rc, out, _ = cli(capsys, "system", "ring:4")
    assert rc == 0 and "4 chips of tsp, 4 links" in out and "24 cycles per 328-byte vector" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[chip]\nlanes = 7\n")
    rc, out, err = cli(capsys, "system", str(bad))
    assert rc == 1 and err.startswith(f"{bad}:2:1: error: chip.lanes 7 is not a multiple")
    rc, _, err = cli(capsys, "system", str(tmp_path / "missing.toml"))
    assert rc == 1 and "cannot read system file" in err


def test_eval_random_is_seeded_and_matches_the_api(capsys, tmp_path):
    out_a, out_b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert cli(capsys, "eval", MLP, "-o", str(out_a))[0] == 0
    assert cli(capsys, "eval", MLP, "-o", str(out_b))[0] == 0
    a, b = np.load(out_a), np.load(out_b)
    assert a.files == ["out0"] and np.array_equal(a["out0"], b["out0"])
    assert a["out0"].dtype == np.float16 and a["out0"].shape == (8, 256)
    rc, out, _ = cli(capsys, "eval", MLP, "--seed", "3")
    assert rc == 0 and out.startswith("out0 : f16[8, 256]  [")


def test_eval_with_files_matches_reference(capsys, tmp_path):
    m = parse_file(MLP)
    rng = np.random.default_rng(7)
    weights = {p.name: rng.standard_normal(p.type.shape).astype(np.float32) * 0.05 for p in m.params}
    x = rng.standard_normal((8, 256)).astype(np.float16)
    np.savez(tmp_path / "w.npz", **weights)
    np.savez(tmp_path / "x.npz", x=x)
    rc, _, err = cli(capsys, "eval", MLP, "-w", str(tmp_path / "w.npz"), "--inputs",
                     str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npz"))
    assert rc == 0, err
    want = Reference(m, weights).run("main", {"x": x})[0]
    assert np.array_equal(np.load(tmp_path / "y.npz")["out0"], want)


@pytest.mark.parametrize("mutate, message", [
    (lambda w: w.pop("w2"), "no array 'w2' for param @w2 : f16[1024, 256]"),
    (lambda w: w.update(extra=np.zeros(3)), "array 'extra' is not a param (the params are: b1, ln_b, ln_g, w1, w2)"),
    (lambda w: w.update(w1=np.zeros((3, 4))), "array 'w1' has shape [3, 4] but @w1 is f16[256, 1024]"),
    (lambda w: w.update(b1=np.array(["a"] * 1024)), "array 'b1' has dtype <U1, which cannot hold f16"),
])
def test_bad_weights_name_the_array(capsys, tmp_path, mutate, message):
    m = parse_file(MLP)
    weights = {p.name: np.zeros(p.type.shape, np.float16) for p in m.params}
    mutate(weights)
    path = tmp_path / "w.npz"
    np.savez(path, **weights)
    rc, out, err = cli(capsys, "eval", MLP, "-w", str(path))
    assert rc == 1 and out == ""
    assert err == f"{path}: error: {message}\n"


@pytest.mark.parametrize("inputs, message", [
    ({"tok": np.array([1.5], np.float32), "pos": np.int32(0)}, "array 'tok' has dtype float32 but %tok is i32 (an integer type)"),
    ({"tok": np.array([1], np.int64), "pos": np.int64(2**40)}, "array 'pos' has values outside the i32 range [-2147483648, 2147483647]"),
    ({"tok": np.array([[1]], np.int32), "pos": np.int32(0)}, "array 'tok' has shape [1, 1] but %tok is i32[1]"),
])
def test_bad_inputs_name_the_array(capsys, tmp_path, inputs, message):
    path = tmp_path / "x.npz"
    np.savez(path, **inputs)
    rc, _, err = cli(capsys, "eval", KV, "--inputs", str(path))
    assert rc == 1 and err == f"{path}: error: {message}\n"


def test_unreadable_array_files(capsys, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    rc, _, err = cli(capsys, "eval", MLP, "-w", str(junk))
    assert rc == 1 and err == f"{junk}: error: not a readable .npz file: not a zip archive\n"
    one = tmp_path / "one.npy"
    np.save(one, np.zeros(3))
    rc, _, err = cli(capsys, "eval", MLP, "-w", str(one))
    assert rc == 1 and "an .npy file (one array)" in err
    truncated = tmp_path / "cut.npz"
    np.savez(tmp_path / "whole.npz", w1=np.zeros((256, 1024), np.float16))
    truncated.write_bytes((tmp_path / "whole.npz").read_bytes()[:300])
    rc, _, err = cli(capsys, "eval", MLP, "-w", str(truncated))
    assert rc == 1 and err.startswith(f"{truncated}: error: not a readable .npz file")
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, w1=np.array([{"a": 1}], dtype=object))
    rc, _, err = cli(capsys, "eval", MLP, "-w", str(pickled))
    assert rc == 1 and "holds Python objects" in err
    rc, _, err = cli(capsys, "eval", MLP, "-w", str(tmp_path / "nope.npz"))
    assert rc == 1 and err == f"{tmp_path / 'nope.npz'}: error: no such file\n"


def test_entry_selection(capsys, tmp_path):
    two = tmp_path / "two.lpu"
    two.write_text("module m\ngraph a(%x: f32[2]) -> (f32[2]) {\n  return %x\n}\n"
                   "graph b(%x: f32[2]) -> (f32[2]) {\n  %y = neg(%x)\n  return %y\n}\n")
    rc, _, err = cli(capsys, "eval", str(two))
    assert rc == 1 and "has several graphs (a, b); choose one with --entry" in err
    rc, _, err = cli(capsys, "eval", str(two), "--entry", "c")
    assert rc == 1 and "has no graph 'c' (it has a, b)" in err
    assert cli(capsys, "eval", str(two), "--entry", "b")[0] == 0


def test_random_ids_stay_in_range(capsys):
    # kv_decode gathers with %tok and writes at %pos: random inputs must be valid for both
    for seed in range(20):
        rc, _, err = cli(capsys, "eval", KV, "--seed", str(seed))
        assert rc == 0, err


def test_output_is_written_atomically(capsys, tmp_path, monkeypatch):
    target = tmp_path / "out.npz"
    target.write_bytes(b"previous")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    rc, _, err = cli(capsys, "eval", MLP, "-o", str(target))
    assert rc == 130 and "interrupted" in err
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]  # no temporary left behind


def test_internal_errors_are_one_line_not_a_traceback(capsys, monkeypatch):
    import compiler.reference as reference

    def broken(op, args):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setitem(reference.IMPLS, "gelu", broken)
    rc, _, err = cli(capsys, "eval", MLP)
    assert rc == 3
    assert "internal error: ZeroDivisionError: simulated bug" in err and "Traceback" not in err


ADD = str(ROOT / "tests" / "asm" / "add.lpuasm")


def test_asm_inspect_run(capsys, tmp_path):
    prog = tmp_path / "add.lpuprog"
    rc, out, err = cli(capsys, "asm", ADD, "-o", str(prog))
    assert rc == 0 and out == f"wrote {prog}: 3 instructions\n"
    rc, out, _ = cli(capsys, "inspect", str(prog))
    assert rc == 0 and "     1 main            2    0 vxm.q0       add a=E1 b=E1 dst=E2 dt=f16 n=2 <- a:#0 b:#0" in out
    # the listing assembles back into the same bytes
    listing = tmp_path / "again.lpuasm"
    listing.write_text(out)
    assert cli(capsys, "asm", str(listing), "-o", str(tmp_path / "again.lpuprog"))[0] == 0
    assert (tmp_path / "again.lpuprog").read_bytes() == prog.read_bytes()
    rc, out, _ = cli(capsys, "inspect", str(prog), "--unit", "MEM", "--cycles", "3:10")
    assert rc == 0 and "mem.e0" in out and "mem.w0" not in out.split("#   id")[1]
    x = np.arange(16, dtype=np.float16).reshape(2, 8)
    np.savez(tmp_path / "x.npz", x=x)
    rc, out, err = cli(capsys, "run", str(prog), "--inputs", str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npz"))
    assert rc == 0, err
    assert out.startswith("main: 8 cycles (0.009 us at 900 MHz), 3 instructions, 6 vector steps\n")
    assert "timing: no violations" in out
    assert np.array_equal(np.load(tmp_path / "y.npz")["out0"], x * 2)


def test_run_reports_violations_and_exits_1(capsys, tmp_path):
    text = (ROOT / "tests" / "asm" / "add.lpuasm").read_text().replace("     1 main       2 ", "     1 main       3 ")
    listing = tmp_path / "late.lpuasm"
    listing.write_text(text)
    prog = tmp_path / "late.lpuprog"
    assert cli(capsys, "asm", str(listing), "-o", str(prog))[0] == 0
    rc, out, err = cli(capsys, "run", str(prog))
    assert rc == 1
    assert "wrong vector: chip 0 vxm.q0 cycle 4 instruction #1 input a" in err
    assert err.strip().endswith("6 timing violations")


def test_program_errors_name_the_file(capsys, tmp_path):
    junk = tmp_path / "junk.lpuprog"
    junk.write_bytes(b"PK\x03\x04 not really")
    rc, _, err = cli(capsys, "run", str(junk))
    assert rc == 1 and err.startswith(f"{junk}: error: not a program file")
    rc, _, err = cli(capsys, "inspect", str(tmp_path / "none.lpuprog"))
    assert rc == 1 and "cannot read program" in err
    bad = tmp_path / "bad.lpuasm"
    bad.write_text("lpuprog 1\nsystem tiny\nentry main\n     0 main 0 0 vxm.q0 frob n=1\n")
    rc, _, err = cli(capsys, "asm", str(bad), "-o", str(tmp_path / "o.lpuprog"))
    assert rc == 1 and err.startswith(f"{bad}:4:") and "unknown instruction 'frob'" in err
    assert not (tmp_path / "o.lpuprog").exists()


GPT = str(ROOT / "examples" / "gpt_block.lpu")


def test_compile_for_many_chips_and_run_with_check(capsys, tmp_path):
    prog = str(tmp_path / "g.lpuprog")
    rc, out, err = cli(capsys, "compile", GPT, "--system", "node", "--tp", "2", "--pp", "2",
                       "--random-weights", "0", "-o", prog)
    assert rc == 0, err
    assert "on 4 of the 8 chips of node (tp=2 pp=2)" in out
    rc, out, err = cli(capsys, "run", prog, "--check")
    assert rc == 0, err
    assert "chips: 4 of 8; links:" in out and "timing: no violations" in out
    assert "matches the reference" in out


def test_compile_searches_the_splits_when_only_chips_are_given(capsys, tmp_path):
    prog = str(tmp_path / "m.lpuprog")
    rc, out, err = cli(capsys, "compile", MLP, "--system", "node", "--chips", "4", "-o", prog)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["tp", "pp", "chips", "cycles", "latency", "SRAM/chip", "note"]
    rows = [ln.split() for ln in lines[1:] if ln.split() and ln.split()[0].isdigit()]
    assert {(int(r[0]), int(r[1])) for r in rows} == {(1, 1), (1, 2), (2, 1), (1, 4), (2, 2), (4, 1)}
    chosen = [r for r in rows if "<-" in r]
    assert len(chosen) == 1 and int(chosen[0][3]) == min(int(r[3]) for r in rows)
    assert f"chose tp={chosen[0][0]} pp={chosen[0][1]}: " in out


@pytest.mark.parametrize("argv, message", [
    (["--tp", "4", "--pp", "4"], "--tp 4 x --pp 4 needs 16 chips; system node has 8"),
    (["--chips", "9"], "--chips 9: system node has 8 chips"),
    (["--tp", "0"], "--tp must be at least 1, got 0"),
    (["--chips", "4", "--tp", "3"], "--tp 3 x --pp 1 = 3 chips, not the 4 of --chips"),
])
def test_bad_splits_are_refused(capsys, tmp_path, argv, message):
    rc, out, err = cli(capsys, "compile", MLP, "--system", "node", *argv, "-o", str(tmp_path / "x"))
    assert rc == 1
    assert message in err and "Traceback" not in err


def test_a_model_too_big_for_the_system_says_how_many_chips(capsys, tmp_path):
    rc, out, err = cli(capsys, "compile", MLP, "--system", "tiny", "-o", str(tmp_path / "x"))
    assert rc == 1 and "about 3 chips would hold them" in err

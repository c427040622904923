"""Golden diagnostics: every bad input gets a located message and exit code 1, never a traceback.

Each tests/diagnostics/NAME.lpu is checked with `lpu check`; its stderr must equal
NAME.err exactly (message, line, column, source line and caret). To accept a
deliberate change of wording, regenerate the .err files and read the diff.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from compiler import parse
from isa.diagnostics import LpuError
from lpu.cli import main

CASES = sorted((ROOT / "tests" / "diagnostics").glob("*.lpu"))


def test_there_are_golden_cases_for_each_required_class():
    names = {p.stem for p in CASES}
    required = {"syntax_missing_paren", "undefined_value", "redefinition", "unknown_op",
                "wrong_arity", "bad_attribute_kind", "unknown_attribute", "shape_mismatch_matmul",
                "shape_mismatch_broadcast", "unknown_dtype", "empty", "non_utf8"}
    assert required <= names


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_diagnostic(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rel = str(path.relative_to(ROOT))
    rc = main(["check", rel])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out == ""
    assert err == path.with_suffix(".err").read_text(encoding="utf-8")
    assert err.startswith(f"{rel}:") and ": error: " in err.splitlines()[0]
    assert "Traceback" not in err


def test_console_script_exit_code_and_no_traceback():
    bad = ROOT / "tests" / "diagnostics" / "shape_mismatch_matmul.lpu"
    run = subprocess.run([sys.executable, "-m", "lpu", "check", str(bad)], capture_output=True,
                         text=True, cwd=ROOT)
    assert run.returncode == 1
    assert "matmul inner dimensions differ" in run.stderr
    assert "Traceback" not in run.stderr and 'File "' not in run.stderr


@pytest.mark.parametrize("text, where, message", [
    ("module m\ngraph g() -> () {\n  %c = constant() {value = 1} : f32[] {\n  return\n}\n", "3:39",
     "expected"),
    ("module m\nparam @w : f32[99999999, 99999999, 99999999]\n", "2:12", "more than the"),
    ("module m\ngraph g() -> () {\n  %c = constant() {value = " + "[" * 3000 + "1" + "]" * 3000
     + "} : f32[]\n  return\n}\n", "1:1", "nested too deeply"),
    ("module m\ngraph g() -> () {\n  %c = constant() {value = " + "[" * 20 + "1" + "]" * 20
     + "} : f32[]\n  return\n}\n", "3:20", "value must be"),
    ("module m\ngraph g(%x: f32[2]) -> (f32[2]) {\n  %y = cast(%x) {to = \"f64\"}\n  return %y\n}\n",
     "3:18", "must be a dtype name"),
    ("module m\ngraph g(%x: f32[2]) -> (f32[2]) {\n  commit @s = %x\n  return %x\n}\n", "3:10",
     "undefined symbol @s"),
    ("module m\nstate @s : f32[2]\ngraph g(%x: f32[3]) -> (f32[3]) {\n  commit @s = %x\n  return %x\n}\n",
     "4:15", "the types differ"),
    ("module m\nstate @s : f32[2]\ngraph g(%x: f32[2]) -> (f32[2]) {\n  commit @s = %x\n"
     "  commit @s = %x\n  return %x\n}\n", "5:10", "committed twice"),
    ("module m\ngraph g(%x: f32[2], %x: f32[2]) -> (f32[2]) {\n  return %x\n}\n", "2:21",
     "redefinition of %x"),
    ("module m\ngraph g(%x: f32[2]) -> (f32[2]) {\n  %y = add(%x, %x) {axis = 1, axis = 2}\n"
     "  return %y\n}\n", "3:31", "given twice"),
    ("module m\x00\n", "1:9", "NUL byte"),
])
def test_more_bad_inputs(text, where, message):
    with pytest.raises(LpuError) as e:
        parse(text, "t.lpu")
    rendered = e.value.render()
    assert message in rendered
    if where:
        assert rendered.startswith(f"t.lpu:{where}: error: "), rendered

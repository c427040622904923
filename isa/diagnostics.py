"""The one diagnostic type every part of lpu reports user errors with.

It lives in `isa` because `isa` is the bottom layer: the compiler, the emulator
and the front door all import it, and none of them import each other.

A diagnostic renders as::

    model.lpu:12:9: error: matmul inner dimensions differ: f16[8, 256] x f16[128, 64]
      %h = matmul(%x, @w1) : f16[8, 1024]
           ^

Columns are 1-based and count characters (not bytes) of the source line.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """The text of one input file, kept so diagnostics can quote its lines."""

    name: str
    text: str

    def line(self, number: int) -> str | None:
        lines = self.text.splitlines()
        if 1 <= number <= len(lines):
            return lines[number - 1]
        return None


@dataclass(frozen=True)
class Loc:
    """A place in a source file: 1-based line and column."""

    source: Source | None = field(compare=False, repr=False)
    line: int
    col: int

    @property
    def filename(self) -> str:
        return self.source.name if self.source is not None else "<unknown>"

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One message for the user: severity, text, and where it points."""

    message: str
    loc: Loc | None = None
    severity: str = "error"  # "error" | "warning" | "note"
    notes: tuple[Diagnostic, ...] = ()
    filename: str | None = None  # used when there is a file but no line (e.g. a bad .npz)

    def render(self) -> str:
        if self.loc is not None:
            head = f"{self.loc}: {self.severity}: {self.message}"
        elif self.filename is not None:
            head = f"{self.filename}: {self.severity}: {self.message}"
        else:
            head = f"{self.severity}: {self.message}"
        parts = [head]
        if self.loc is not None and self.loc.source is not None:
            text = self.loc.source.line(self.loc.line)
            if text is not None:
                shown = text.expandtabs(1)
                caret_col = min(max(self.loc.col, 1), len(shown) + 1)
                parts.append("  " + shown)
                parts.append("  " + " " * (caret_col - 1) + "^")
        for note in self.notes:
            parts.append(note.render())
        return "\n".join(parts)


class LpuError(Exception):
    """The one exception that carries user errors across every boundary.

    The CLI catches it, prints the rendered diagnostics on stderr and exits 1.
    Internal invariants use `assert` instead: a broken one is our bug, never
    the user's mistake.
    """

    def __init__(self, diagnostics: Diagnostic | list[Diagnostic] | tuple[Diagnostic, ...]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        assert self.diagnostics, "LpuError needs at least one diagnostic"
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)


def error(message: str, loc: Loc | None = None, *, filename: str | None = None) -> LpuError:
    """Build (not raise) an LpuError with one located error diagnostic."""
    return LpuError(Diagnostic(message, loc, filename=filename))

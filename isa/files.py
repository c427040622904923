"""Reading and writing the user's files: errors that name the file, writes that are atomic."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

from isa.diagnostics import error


def read_bytes(path: str, what: str = "file") -> bytes:
    """The whole file, or an LpuError naming it ("cannot read program: No such file ...")."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror}", filename=path) from None


def write_atomically(path: str, write: Callable[[BinaryIO], None], suffix: str = "") -> None:
    """Write through a temporary file in the same directory, then rename: the file is complete or
    absent, never half-written (an error or an interruption leaves no trace)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lpu-", suffix=suffix, dir=directory)
    except OSError as e:
        raise error(f"cannot write file: {e.strerror}", filename=path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as an ordinary open() would have made it (mkstemp gives 0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

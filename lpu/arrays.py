"""Files of arrays (.npz): loading them safely, checking them against a module, making random ones.

Weights are keyed by the param's name without `@`, inputs by the argument's name
without `%`, outputs `out0`, `out1`, ... in `return` order (DESIGN.md 8). A
missing, extra, misshapen or wrongly typed array is an error that names it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping

import numpy as np

from compiler.ir import Global, Graph, Module, TensorType, Value
from isa.diagnostics import LpuError, error
from isa.files import write_atomically
from isa.numerics import FLOATS, INT_RANGE, STORAGE


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Read every array of an .npz file; never unpickles."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        magic = b"PK\x03\x04"  # let np.load report it below, in the same words as other errors
    except OSError as e:
        raise error(f"cannot read file: {e.strerror}", filename=path) from None
    if magic != b"PK\x03\x04":
        what = "an .npy file (one array)" if magic.startswith(b"\x93NUM") else "not a zip archive"
        raise error(f"not a readable .npz file: {what}", filename=path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in sorted(z.files)}
    except FileNotFoundError:
        raise error("no such file", filename=path) from None
    except IsADirectoryError:
        raise error("is a directory, not an .npz file", filename=path) from None
    except PermissionError:
        raise error("permission denied", filename=path) from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise error(f"not a readable .npz file ({e})", filename=path) from None
    except ValueError as e:
        if "pickle" in str(e):
            raise error(
                "holds Python objects, which lpu does not load (only plain arrays)", filename=path
            ) from None
        raise error(f"not a readable .npz file ({e})", filename=path) from None


def save_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an .npz atomically: the file appears complete or not at all."""
    write_atomically(
        path, lambda f: np.savez(f, **{k: _exportable(v) for k, v in arrays.items()}), suffix=".npz"
    )


def _exportable(x: np.ndarray) -> np.ndarray:
    return np.asarray(x)


def check_arrays(
    arrays: Mapping[str, np.ndarray], expected: Iterable[Global | Value], *, filename: str, what: str
) -> dict[str, np.ndarray]:
    """Match arrays to the params (or graph arguments) they are for; refuse anything off."""
    expected = list(expected)
    names = {e.name for e in expected}
    sigil = "@" if what == "param" else "%"
    for e in expected:
        if e.name not in arrays:
            raise error(f"no array '{e.name}' for {what} {sigil}{e.name} : {e.type}", filename=filename)
    for key in arrays:
        if key not in names:
            known = ", ".join(sorted(names)) or "none"
            raise error(f"array '{key}' is not a {what} (the {what}s are: {known})", filename=filename)
    out = {}
    for e in expected:
        out[e.name] = _check_one(arrays[e.name], e.type, f"array '{e.name}'", f"{sigil}{e.name}", filename)
    return out


def _check_one(x: np.ndarray, t: TensorType, label: str, target: str, filename: str) -> np.ndarray:
    if x.shape != t.shape:
        raise error(f"{label} has shape {list(x.shape)} but {target} is {t}", filename=filename)
    kind = x.dtype.kind
    if t.dtype in FLOATS:
        if kind not in "fiub":
            raise error(f"{label} has dtype {x.dtype}, which cannot hold {t.dtype}", filename=filename)
        return x
    if t.dtype == "bool":
        if kind != "b":
            raise error(f"{label} has dtype {x.dtype} but {target} is bool", filename=filename)
        return x
    if kind not in "iu":
        raise error(
            f"{label} has dtype {x.dtype} but {target} is {t.dtype} (an integer type)", filename=filename
        )
    lo, hi = INT_RANGE[t.dtype]
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        raise error(f"{label} has values outside the {t.dtype} range [{lo}, {hi}]", filename=filename)
    return x.astype(STORAGE[t.dtype])


def random_weights(module: Module, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random weights: fan-in scaled normals for matrices, small normals otherwise."""
    rng = np.random.default_rng(seed)
    return {p.name: _random(rng, p.type, scale_by_fan_in=True) for p in module.params}


def random_inputs(module: Module, graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs; integer inputs used as ids or offsets (directly, or through a reshape,
    a cast or the addition of a constant: `len - 1` picking the last row) stay within range."""
    rng = np.random.default_rng(seed + 1)
    bounds = _index_bounds(graph)
    out = {}
    for a in graph.args:
        if a.type.dtype in ("i8", "i32") and id(a) in bounds:
            lo, hi = bounds[id(a)]
            out[a.name] = rng.integers(lo, max(hi, lo + 1), size=a.type.shape).astype(STORAGE[a.type.dtype])
        else:
            out[a.name] = _random(rng, a.type, scale_by_fan_in=False)
    return out


def _random(rng: np.random.Generator, t: TensorType, scale_by_fan_in: bool) -> np.ndarray:
    if t.dtype in FLOATS:
        scale = 1.0 / np.sqrt(t.shape[-2]) if scale_by_fan_in and t.rank >= 2 else 1.0
        x = rng.standard_normal(t.shape) * scale
        return x.astype(np.float16 if t.dtype == "f16" else np.float32)
    if t.dtype == "bool":
        return rng.integers(0, 2, size=t.shape).astype(np.bool_)
    return rng.integers(-8, 8, size=t.shape).astype(STORAGE[t.dtype])


def _index_bounds(graph: Graph) -> dict[int, tuple[int, int]]:
    """For values used as gather ids or update_slice offsets, and for the values they are computed
    from by a reshape, a cast or the addition or subtraction of a constant: the safe range [lo, hi)."""
    made = {id(op.result): op for op in graph.ops}
    bounds: dict[int, tuple[int, int]] = {}

    def need(v, lo: int, hi: int) -> None:
        old_lo, old_hi = bounds.get(id(v), (0, 1 << 30) if lo >= 0 else (lo, 1 << 30))
        bounds[id(v)] = (max(old_lo, lo), min(old_hi, hi))

    def constant(v) -> int | None:
        op = made.get(id(v))
        if op is None or op.name != "constant" or op.result.type.rank != 0:
            return None
        value = op.attr("value")
        return int(value) if isinstance(value, (int, float)) and float(value).is_integer() else None

    for op in reversed(graph.ops):  # consumers first: a range passes back to what a value is made of
        if op.name == "gather":
            need(op.operands[1], 0, op.operands[0].type.shape[0])
        elif op.name == "update_slice":
            x, v, index = op.operands
            axis = op.attr("axis") % x.type.rank
            need(index, 0, x.type.shape[axis] - v.type.shape[axis] + 1)
        r = bounds.get(id(op.result))
        if r is None:
            continue
        lo, hi = r
        if op.name in ("reshape", "cast") and op.operands[0].type.dtype in ("i8", "i32"):
            need(op.operands[0], lo, hi)
        elif op.name in ("add", "sub") and len(op.operands) == 2:
            a, b = op.operands
            if constant(b) is not None:  # a + c or a - c
                c = constant(b) if op.name == "add" else -constant(b)
                need(a, lo - c, hi - c)
            elif op.name == "add" and constant(a) is not None:
                need(b, lo - constant(a), hi - constant(a))
    return bounds


__all__ = ["LpuError", "check_arrays", "load_npz", "random_inputs", "random_weights", "save_npz"]

"""The machine's number formats: how each dtype is stored and where values are rounded.

Shared by the reference interpreter and the emulator so that both round the
same way. Storage in numpy:

| dtype | numpy storage | note |
|---|---|---|
| f32  | float32 | |
| f16  | float16 | |
| bf16 | float32 holding a value rounded to bf16 | numpy has no bfloat16 |
| i8   | int8    | |
| i32  | int32   | |
| bool | bool    | |

Rounding is to nearest, ties to even, everywhere. Integer arithmetic wraps
(two's complement); conversions to an integer type saturate (and NaN becomes 0).
"""

from __future__ import annotations

import numpy as np

STORAGE = {
    "f32": np.float32,
    "f16": np.float16,
    "bf16": np.float32,
    "i8": np.int8,
    "i32": np.int32,
    "bool": np.bool_,
}
FLOATS = ("f32", "f16", "bf16")
INTS = ("i8", "i32")
INT_RANGE = {"i8": (-128, 127), "i32": (-(2**31), 2**31 - 1)}


def round_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even); returns float32."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), out).astype(np.float32)


def from_f32(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round f32 (or f64) float results to the storage of a float dtype."""
    x = np.asarray(x)
    with np.errstate(over="ignore"):  # overflow to infinity is the rounding rule, not an accident
        if dtype == "f32":
            return x.astype(np.float32)
        if dtype == "f16":
            return x.astype(np.float16)  # one rounding, from whatever width x has
        if dtype == "bf16":
            return round_bf16(x.astype(np.float32))
    raise AssertionError(dtype)


def wrap_int(x: np.ndarray, dtype: str) -> np.ndarray:
    """Integer results wrap around, like two's complement hardware."""
    return np.asarray(x).astype(np.int64).astype(STORAGE[dtype])


def convert(x: np.ndarray, to: str) -> np.ndarray:
    """The `cast` / `cvt` conversion from any storage array to dtype `to`.

    float -> float rounds to nearest even; float -> int rounds to nearest even and
    saturates (NaN -> 0); int -> int saturates; anything -> bool is `!= 0`;
    bool -> number is 0 or 1.
    """
    x = np.asarray(x)
    if to == "bool":
        return x != 0
    if to in FLOATS:
        return from_f32(x.astype(np.float64), to)
    lo, hi = INT_RANGE[to]
    if x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            r = np.rint(x.astype(np.float64))
            r = np.where(np.isnan(r), 0.0, r)
            return np.clip(r, lo, hi).astype(STORAGE[to])
    return np.clip(x.astype(np.int64), lo, hi).astype(STORAGE[to])


def to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """Bring a user's array (any float width for float dtypes) into storage form."""
    x = np.asarray(x)
    if dtype in FLOATS:
        return from_f32(x.astype(np.float64) if x.dtype != np.float32 else x, dtype)
    return x.astype(STORAGE[dtype])


def as_f32(x: np.ndarray) -> np.ndarray:
    """The f32 working value of a float storage array."""
    return np.asarray(x, dtype=np.float32)

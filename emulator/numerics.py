"""Rounding and conversion inside the emulator's numba kernels (no float16 in numba).

Values travel as float64, which holds every f32, f16, bf16, i8 and i32 value
exactly; these functions round a float64 result to what the chip stores. They
must agree bit for bit with isa.numerics (the reference interpreter's rounding);
tests/test_emulator_numerics.py checks that over many values.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# dtype codes: the index in isa.spec.DTYPES
F32, F16, BF16, I8, I32, BOOL = 0, 1, 2, 3, 4, 5


@numba.njit(cache=True)
def round_float(x: float, mantissa_bits: int, min_exp: int, max_value: float) -> float:
    """Round to nearest even with `mantissa_bits` bits of precision (implicit bit included),
    subnormals below 2**min_exp, and overflow to infinity past `max_value`."""
    if x != x or x == 0.0 or math.isinf(x):
        return x
    m, e = math.frexp(x)  # x = m * 2**e with 0.5 <= |m| < 1
    quantum = max(e, min_exp + 1) - mantissa_bits
    y = math.ldexp(np.rint(math.ldexp(x, -quantum)), quantum)
    if abs(y) > max_value:
        return math.copysign(math.inf, x)
    return y


@numba.njit(cache=True)
def to_dtype(x: float, dt: int) -> float:
    """A computed value as the chip stores it in dtype `dt` (integer results wrap)."""
    if dt == F32:
        return round_float(x, 24, -126, 3.4028234663852886e38)
    if dt == F16:
        return round_float(x, 11, -14, 65504.0)
    if dt == BF16:
        return round_float(round_float(x, 24, -126, 3.4028234663852886e38), 8, -126, 3.3895313892515355e38)
    if dt == BOOL:
        return 1.0 if x != 0.0 else 0.0
    if x != x or math.isinf(x):
        return 0.0
    v = np.int64(x)
    if dt == I8:
        v = ((v + 128) % 256) - 128
    else:
        v = ((v + 2147483648) % 4294967296) - 2147483648
    return float(v)


@numba.njit(cache=True)
def convert(x: float, to: int) -> float:
    """The cvt instruction: round to nearest even; to integers saturating with NaN -> 0."""
    if to == BOOL:
        return 1.0 if x != 0.0 else 0.0
    if to == I8 or to == I32:
        if x != x:
            return 0.0
        lo, hi = (-128.0, 127.0) if to == I8 else (-2147483648.0, 2147483647.0)
        r = np.rint(x)
        return min(max(r, lo), hi)
    return to_dtype(x, to)

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
def round_float(x: float, sub: float, scale: float, min_normal: float, max_value: float) -> float:
    """Round to nearest even at the precision of a float format, subnormals below `min_normal`, and
    overflow to infinity past `max_value`. Adding and subtracting c = 1.5 * 2**52 * quantum rounds
    |x| to a multiple of the quantum, ties to even (the machine's own rounding): `sub` is that c
    below `min_normal`, and above it c = 2**e * `scale` for |x| = m * 2**e, 0.5 <= m < 1."""
    if x != x or x == 0.0 or math.isinf(x):
        return x
    a = abs(x)
    if a > 2.0 * max_value:
        return math.copysign(math.inf, x)
    if a < min_normal:
        c = sub
    else:
        m, _ = math.frexp(a)
        c = (a / m) * scale  # a / m = 2**e exactly
    y = (a + c) - c
    if y > max_value:
        return math.copysign(math.inf, x)
    return math.copysign(y, x)


@numba.njit(cache=True)
def to_dtype(x: float, dt: int) -> float:
    """A computed value as the chip stores it in dtype `dt` (integer results wrap)."""
    if dt == F32:  # the machine's conversion to float32 rounds to nearest even, with subnormals
        return np.float64(np.float32(x))
    if dt == F16:  # 11 significant bits, subnormals below 2**-14: c = 1.5 * 2**(52 - 11) * 2**e
        return round_float(x, 1.5 * 2.0**28, 1.5 * 2.0**41, 2.0**-14, 65504.0)
    if dt == BF16:  # 8 significant bits, of the value rounded to f32 first
        y = np.float64(np.float32(x))
        return round_float(y, 1.5 * 2.0**-81, 1.5 * 2.0**44, 2.0**-126, 3.3895313892515355e38)
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

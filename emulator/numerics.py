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


_EXP = 0x7FF0000000000000  # a float64's exponent bits


@numba.njit(cache=True)
def round_row(v: np.ndarray, dt: int, via_f32: bool, bits: np.ndarray) -> None:
    """`v[i] = to_dtype(v[i], dt)` for a float dtype, on every entry at once (after rounding to f32
    first when `via_f32`, as the kernel's `_store` does), in plain loops that the compiler turns
    into vector instructions (to_dtype's branches and frexp, lane by lane, cost more than the
    arithmetic they round). `bits` is scratch of v's length, int64. round_float's constant
    c = 2**e * scale, for |x| = m * 2**e (0.5 <= m < 1), is built from x's exponent bits: its
    exponent field is x's plus `shift` and its mantissa 1.5; exponents past `cap` (rounding to inf
    anyway, and inf and NaN themselves) are clamped so that c stays finite."""
    n = v.shape[0]
    if via_f32 or dt == F32 or dt == BF16:
        for i in range(n):
            v[i] = np.float64(np.float32(v[i]))
    if dt == F32:
        return
    if dt == F16:
        shift, sub, min_normal, max_value, cap = 42, 1.5 * 2.0**28, 2.0**-14, 65504.0, (1023 + 17) << 52
    else:  # BF16
        shift, sub, min_normal = 45, 1.5 * 2.0**-81, 2.0**-126
        max_value, cap = 3.3895313892515355e38, (1023 + 129) << 52
    c = bits.view(np.float64)
    raw = v.view(np.int64)
    for i in range(n):
        bits[i] = (min(raw[i] & _EXP, cap) + (shift << 52)) | (1 << 51)
    for i in range(n):
        x = v[i]
        a = abs(x)
        k = c[i] if a >= min_normal else sub
        y = (a + k) - k
        if y > max_value:
            y = math.inf
        v[i] = math.copysign(y, x)

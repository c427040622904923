"""The emulator's numba rounding agrees bit for bit with the reference interpreter's numpy rounding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.numerics import BF16, BOOL, F16, F32, I8, I32, convert, round_row, to_dtype
from isa.numerics import convert as np_convert
from isa.numerics import from_f32

SPECIAL = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.99, 65520.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26,
           2.0**-14, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 2048.5, 1e-8, 3.4e38, 3.5e38, np.inf, -np.inf,
           1 + 2.0**-8, 1 + 3 * 2.0**-8, 2.5, 3.5, -2.5, 127.5, 128.0, -129.0, 1e10, -1e10]


def floats_to_check():
    rng = np.random.default_rng(0)
    wide = rng.standard_normal(5000) * 10.0 ** rng.integers(-30, 30, 5000)
    tiny = 2.0 ** np.arange(-152.0, -120.0, 0.37)  # f32 and bf16 subnormals
    small = 2.0 ** np.arange(-26.0, -12.0, 0.13)  # f16 subnormals
    ties = np.array([(2 * k + 1) * 2.0**-25 for k in range(8)] + [1 + (2 * k + 1) * 2.0**-9 for k in range(8)])
    return np.concatenate([SPECIAL, wide, rng.standard_normal(2000), tiny, -tiny, small, -small, ties])


@pytest.mark.parametrize("dt, name", [(F32, "f32"), (F16, "f16"), (BF16, "bf16")])
def test_float_rounding_matches_numpy(dt, name):
    xs = floats_to_check()
    with np.errstate(over="ignore"):
        want = from_f32(xs.astype(np.float32) if name == "bf16" else xs, name).astype(np.float64)
    got = np.array([to_dtype(float(x), dt) for x in xs])
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (xs[~same][:5], got[~same][:5], want[~same][:5])


@pytest.mark.parametrize("dt, name", [(F32, "f32"), (F16, "f16"), (BF16, "bf16")])
def test_kernel_store_rounds_through_f32_like_the_reference(dt, name):
    """The kernel rounds a result to f32 with the machine's float32 conversion, then to its dtype."""
    from emulator.kernel import _store

    xs = np.concatenate([floats_to_check(), [1 + 2.0**-24, 1 + 3 * 2.0**-24, 2.0**-149 * 2.5]])
    with np.errstate(over="ignore"):
        want = from_f32(xs.astype(np.float32), name).astype(np.float64)
    got = np.array([_store(float(x), dt) for x in xs])
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (xs[~same][:5], got[~same][:5], want[~same][:5])


@pytest.mark.parametrize("dt", [F32, F16, BF16])
@pytest.mark.parametrize("via_f32", [True, False])
def test_rounding_a_whole_vector_matches_lane_by_lane(dt, via_f32):
    """round_row (the kernel's vectorised rounding) gives what to_dtype and _store give one lane at a
    time, signs of zeros and NaNs included."""
    from emulator.kernel import _store

    xs = np.concatenate(
        [floats_to_check(), [1 + 2.0**-24, 2.0**-149 * 2.5, np.nan, -np.nan, 1e300, -1e300, 5e-324, -5e-324],
         np.geomspace(1e30, 3e38, 200), -np.geomspace(7e4, 1e30, 200)]
    )
    got = xs.copy()
    round_row(got, dt, via_f32, np.zeros(len(xs), np.int64))
    want = np.array([_store(float(x), dt) if via_f32 else to_dtype(float(x), dt) for x in xs])
    same = ((got == want) | (np.isnan(got) & np.isnan(want))) & (np.signbit(got) == np.signbit(want))
    assert same.all(), (xs[~same][:5], got[~same][:5], want[~same][:5])


@pytest.mark.parametrize("to, name", [(I8, "i8"), (I32, "i32"), (BOOL, "bool"), (F16, "f16"), (F32, "f32")])
def test_conversions_match_numpy(to, name):
    xs = np.concatenate([floats_to_check(), [np.nan]])
    want = np_convert(xs, name).astype(np.float64)
    got = np.array([convert(float(x), to) for x in xs])
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (xs[~same][:5], got[~same][:5], want[~same][:5])


@given(st.integers(-(2**40), 2**40))
def test_integer_results_wrap(v):
    assert to_dtype(float(v), I8) == float(np.int64(v).astype(np.int8))
    assert to_dtype(float(v), I32) == float(np.int64(v).astype(np.int32))


SPECIAL_VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 800.0, -800.0, 1e-300, 2.5]


def test_vxm_actions_agree_with_numpy_on_special_values():
    import math

    from emulator.kernel import ACTIONS, _binary, _unary

    unary = {"neg": np.negative, "relu": lambda x: np.maximum(x, 0), "exp": np.exp, "log": np.log,
             "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "sqrt": np.sqrt,
             "rsqrt": lambda x: 1 / np.sqrt(x), "recip": lambda x: 1 / x, "erf": np.vectorize(math.erf)}
    binary = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
              "min": np.minimum, "lt": np.less, "gt": np.greater, "eq": np.equal}
    bad = []
    with np.errstate(all="ignore"):
        for name, f in unary.items():
            for v in SPECIAL_VALUES:
                got, want = _unary(ACTIONS[name], v), float(f(np.float64(v)))
                if not (got == want or (got != got and want != want)):
                    bad.append((name, v, got, want))
        for name, f in binary.items():
            for v in SPECIAL_VALUES:
                for w in SPECIAL_VALUES:
                    got, want = _binary(ACTIONS[name], v, w), float(f(np.float64(v), np.float64(w)))
                    if not (got == want or (got != got and want != want)):
                        bad.append((name, v, w, got, want))
    assert bad == []

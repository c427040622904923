"""The reference interpreter against numpy code written independently here.

The expected values are computed in float64 and rounded once to the result
dtype, so a float op may differ from them only where the interpreter's f32
working precision tips a rounding: at most one unit in the last place of the
result dtype (f32 results: a few f32 ulps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from compiler import parse
from compiler.reference import Reference, evaluate
from isa.diagnostics import LpuError
from isa.numerics import STORAGE, round_bf16
from lpu.strategies import modules

RNG = np.random.default_rng(1234)
ULP_BITS = {"f32": 23, "f16": 10, "bf16": 7}


def to_dtype(x64: np.ndarray, dtype: str) -> np.ndarray:
    """Independent rounding: float64 -> dtype, through the bit patterns."""
    if dtype == "f16":
        return np.asarray(x64, dtype=np.float64).astype(np.float16)
    if dtype == "f32":
        return np.asarray(x64, dtype=np.float32)
    # bf16: keep the top 16 bits of the f32 pattern, ties to even
    f = np.asarray(x64, dtype=np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    lower = bits & 0xFFFF
    upper = bits >> 16
    up = (lower > 0x8000) | ((lower == 0x8000) & (upper & 1 == 1))
    return ((upper + up.astype(np.uint64)) << 16).astype(np.uint32).view(np.float32)


def close(got: np.ndarray, want64: np.ndarray, dtype: str, ulps: float = 1.0) -> None:
    want = to_dtype(want64, dtype).astype(np.float64)
    got = np.asarray(got).astype(np.float64)
    assert got.shape == want.shape
    both_nan = np.isnan(got) & np.isnan(want)
    same_inf = np.isinf(want) & (got == want)
    scale = np.maximum(np.abs(want), 2.0 ** -14 if dtype == "f16" else 1e-30)
    # f32 results may lose a few bits to cancellation inside f32 formulas (gelu near zero):
    # allow an absolute 1e-6 of the largest magnitude; f16/bf16 results are within `ulps` ulps.
    floor = 1e-6 * max(1.0, float(np.nanmax(np.abs(want[np.isfinite(want)]), initial=0))) if dtype == "f32" else 0
    tol = ulps * scale * 2.0 ** -ULP_BITS[dtype] + floor
    ok = both_nan | same_inf | (np.abs(got - want) <= tol)
    assert ok.all(), f"{dtype}: worst {np.max(np.abs(got - want)[~ok])}, got {got[~ok][:4]}, want {want[~ok][:4]}"


def run(body: str, args: dict[str, tuple[str, np.ndarray]], result: str,
        params: dict[str, tuple[str, np.ndarray]] | None = None, out: str = "%r") -> np.ndarray:
    params = params or {}
    decls = "".join(f"param @{k} : {t}\n" for k, (t, _) in params.items())
    sig = ", ".join(f"%{k}: {t}" for k, (t, _) in args.items())
    text = f"module t\n{decls}graph main({sig}) -> ({result}) {{\n{body}\n  return {out}\n}}\n"
    m = parse(text, "t.lpu")
    (y,) = evaluate(m, "main", {k: v for k, (_, v) in args.items()}, {k: v for k, (_, v) in params.items()})
    return y


def stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """Inputs as the chip stores them, in float64 for the independent computation."""
    return to_dtype(x, dtype).astype(np.float64)


def tstr(dtype: str, shape) -> str:
    return f"{dtype}[{', '.join(map(str, shape))}]"


ERF = np.vectorize(math.erf)

UNARY = {
    "neg": lambda x: -x,
    "relu": lambda x: np.maximum(x, 0),
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "recip": lambda x: 1 / x,
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "erf": lambda x: ERF(x),
}
POSITIVE_ONLY = {"log", "sqrt", "rsqrt"}


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_float_ops(name, dtype):
    x = RNG.standard_normal((3, 17)) * 3
    if name in POSITIVE_ONLY:
        x = np.abs(x) + 0.01
    xs = stored(x, dtype)
    t = tstr(dtype, x.shape)
    got = run(f"  %r = {name}(%x)", {"x": (t, to_dtype(x, dtype))}, t)
    close(got, UNARY[name](xs), dtype, ulps=8 if dtype == "f32" else 1)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_gelu_exact_form_uses_erf(dtype):
    x = RNG.standard_normal((4, 9)) * 2
    xs = stored(x, dtype)
    t = tstr(dtype, x.shape)
    got = run('  %r = gelu(%x) {approximate = "none"}', {"x": (t, to_dtype(x, dtype))}, t)
    close(got, 0.5 * xs * (1 + ERF(xs / math.sqrt(2))), dtype, ulps=8 if dtype == "f32" else 1)
    tanh_form = run("  %r = gelu(%x)", {"x": (t, to_dtype(x, dtype))}, t)
    assert not np.array_equal(got, tanh_form)  # the two forms really differ


BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "max": np.maximum, "min": np.minimum}


@pytest.mark.parametrize("shapes", [((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((5,), ()), ((2, 1, 3), (4, 1))])
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_float_ops_broadcast(name, dtype, shapes):
    sa, sb = shapes
    a = RNG.standard_normal(sa) * 4
    b = RNG.standard_normal(sb) * 4 + (5 if name == "div" else 0)
    out = np.broadcast_shapes(sa, sb)
    got = run(f"  %r = {name}(%a, %b)", {"a": (tstr(dtype, sa), to_dtype(a, dtype)),
                                         "b": (tstr(dtype, sb), to_dtype(b, dtype))}, tstr(dtype, out))
    close(got, BINARY[name](stored(a, dtype), stored(b, dtype)), dtype)


def test_f16_rounds_after_every_op():
    # 2048 + 1 is a tie in f16 and rounds to even (2048); a second +1 stays 2048.
    x = np.array([2048.0], np.float16)
    one = np.array([1.0], np.float16)
    got = run("  %a = add(%x, %o)\n  %r = add(%a, %o)", {"x": ("f16[1]", x), "o": ("f16[1]", one)},
              "f16[1]")
    assert got.dtype == np.float16 and got[0] == 2048.0
    # mul then add rounds the product first: (1 + 2^-10)^2 = 1 + 2^-9 + 2^-20 -> 1 + 2^-9 in f16
    y = np.array([1 + 2.0**-10], np.float16)
    got = run("  %p = mul(%y, %y)\n  %r = sub(%p, %o)", {"y": ("f16[1]", y), "o": ("f16[1]", one)},
              "f16[1]")
    assert got[0] == np.float16(2.0**-9)


def test_bf16_rounding_ties_to_even():
    vals = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, 1 + 2.0**-8 + 2.0**-20, -(1 + 2.0**-8)], np.float32)
    got = round_bf16(vals)
    assert got.tolist() == [1.0, 1 + 2.0**-6, 1 + 2.0**-7, -1.0]
    assert np.isnan(round_bf16(np.array([np.nan], np.float32)))[0]
    assert round_bf16(np.array([np.inf], np.float32))[0] == np.inf
    x = np.array([[1 + 2.0**-8, 3.0]], np.float32)
    got = run("  %r = add(%x, %x)", {"x": ("bf16[1, 2]", x)}, "bf16[1, 2]")
    assert got.dtype == np.float32 and got.tolist() == [[2.0, 6.0]]  # input was stored as bf16 1.0


def test_integer_arithmetic_wraps():
    a = np.array([100, -100, 127, -128], np.int8)
    got = run("  %r = add(%a, %a)", {"a": ("i8[4]", a)}, "i8[4]")
    assert got.tolist() == [-56, 56, -2, 0]
    got = run("  %r = neg(%a)", {"a": ("i8[4]", a)}, "i8[4]")
    assert got.tolist() == [-100, 100, -127, -128]
    b = np.array([2**30, -(2**31)], np.int32)
    got = run("  %r = mul(%b, %t)", {"b": ("i32[2]", b), "t": ("i32[]", np.int32(4))}, "i32[2]")
    assert got.tolist() == [0, 0]


@pytest.mark.parametrize("to, src, values, want", [
    ("i8", "f32", [2.5, 3.5, -2.5, 300.0, -300.0, np.nan, 0.49], [2, 4, -2, 127, -128, 0, 0]),
    ("i32", "f32", [1e10, -1e10, 7.5], [2**31 - 1, -(2**31), 8]),
    ("i8", "i32", [1000, -1000, 5], [127, -128, 5]),
    ("f16", "f32", [1 + 2.0**-11, 70000.0, 1e-8], [1.0, np.inf, 0.0]),
    ("bool", "f32", [0.0, -0.0, 2.0, np.nan], [False, False, True, True]),
    ("f32", "bool", [True, False], [1.0, 0.0]),
    ("i32", "bool", [True, False], [1, 0]),
    ("f32", "i8", [-128, 127], [-128.0, 127.0]),
])
def test_cast_rounds_to_even_and_saturates(to, src, values, want):
    np_src = {"f32": np.float32, "i32": np.int32, "i8": np.int8, "bool": np.bool_}[src]
    x = np.array(values, np_src)
    got = run(f'  %r = cast(%x) {{to = "{to}"}}', {"x": (f"{src}[{len(values)}]", x)}, f"{to}[{len(values)}]")
    assert got.tolist() == want


def test_comparisons_and_where_broadcast():
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    b = RNG.standard_normal((3,)).astype(np.float32)
    for name, fn in (("less", np.less), ("greater", np.greater), ("equal", np.equal)):
        got = run(f"  %r = {name}(%a, %b)", {"a": ("f32[2, 3]", a), "b": ("f32[3]", b)}, "bool[2, 3]")
        assert got.dtype == np.bool_ and np.array_equal(got, fn(a, b))
    c = a > 0
    got = run("  %r = where(%c, %a, %b)", {"c": ("bool[2, 3]", c), "a": ("f32[2, 3]", a),
                                           "b": ("f32[3]", b)}, "f32[2, 3]")
    assert np.array_equal(got, np.where(c, a, b))


def test_matmul_f16_accumulates_in_f32():
    k = 4096
    a = np.ones((1, k), np.float16)
    b = np.ones((k, 1), np.float16)
    got = run("  %r = matmul(%a, %b)", {"a": (f"f16[1, {k}]", a), "b": (f"f16[{k}, 1]", b)}, "f16[1, 1]")
    assert got[0, 0] == 4096.0  # an f16 accumulator would stop at 2048
    got32 = run("  %r = matmul(%a, %b) : f32[1, 1]", {"a": (f"f16[1, {k}]", a), "b": (f"f16[{k}, 1]", b)},
                "f32[1, 1]")
    assert got32.dtype == np.float32 and got32[0, 0] == 4096.0


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_matmul_batched_broadcast(dtype):
    a = RNG.standard_normal((2, 3, 8))
    b = RNG.standard_normal((8, 5))
    got = run("  %r = matmul(%a, %b)", {"a": (tstr(dtype, a.shape), to_dtype(a, dtype)),
                                        "b": (tstr(dtype, b.shape), to_dtype(b, dtype))}, tstr(dtype, (2, 3, 5)))
    close(got, stored(a, dtype) @ stored(b, dtype), dtype)


def test_matmul_i8_is_exact_in_i32():
    a = np.full((2, 300), 127, np.int8)
    b = np.full((300, 3), -128, np.int8)
    got = run("  %r = matmul(%a, %b)", {"a": ("i8[2, 300]", a), "b": ("i8[300, 3]", b)}, "i32[2, 3]")
    assert got.dtype == np.int32 and (got == 127 * -128 * 300).all()


@pytest.mark.parametrize("attrs, fn", [
    ("{axis = 1}", lambda x: x.sum(axis=1)),
    ("{axis = [0, 2], keepdims = true}", lambda x: x.sum(axis=(0, 2), keepdims=True)),
    ("{axis = -1, keepdims = false}", lambda x: x.sum(axis=-1)),
    ("", lambda x: x.sum()),
])
def test_reduce_sum_axes_and_keepdims(attrs, fn):
    x = RNG.standard_normal((2, 3, 4))
    want = fn(stored(x, "f32"))
    got = run(f"  %r = reduce_sum(%x) {attrs}", {"x": ("f32[2, 3, 4]", x.astype(np.float32))},
              tstr("f32", np.shape(want)))
    close(got, want, "f32", ulps=8)


def test_reduce_max_mean_and_integer_sum():
    x = RNG.standard_normal((3, 5)).astype(np.float16)
    got = run("  %r = reduce_max(%x) {axis = 0}", {"x": ("f16[3, 5]", x)}, "f16[5]")
    assert np.array_equal(got, x.max(axis=0))
    got = run("  %r = reduce_mean(%x) {axis = 1, keepdims = true}", {"x": ("f16[3, 5]", x)}, "f16[3, 1]")
    close(got, x.astype(np.float64).mean(axis=1, keepdims=True), "f16")
    q = np.full((4,), 100, np.int8)
    got = run("  %r = reduce_sum(%q)", {"q": ("i8[4]", q)}, "i8[]")
    assert int(got) == (400 + 128) % 256 - 128  # wraps


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_softmax(dtype):
    x = RNG.standard_normal((3, 7)) * 4
    x[0, 2] = -np.inf
    xs = stored(x, dtype)
    e = np.exp(xs - xs.max(axis=-1, keepdims=True))
    t = tstr(dtype, x.shape)
    got = run("  %r = softmax(%x)", {"x": (t, to_dtype(x, dtype))}, t)
    close(got, e / e.sum(axis=-1, keepdims=True), dtype, ulps=8 if dtype == "f32" else 1)
    assert got[0, 2] == 0
    got0 = run("  %r = softmax(%x) {axis = 0}", {"x": (t, to_dtype(np.nan_to_num(x, neginf=0), dtype))}, t)
    close(got0.sum(axis=0), np.ones(7), dtype, ulps=16)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_layernorm_biased_variance_eps_inside(dtype):
    x = RNG.standard_normal((4, 16)) * 3 + 1
    g = RNG.standard_normal(16)
    b = RNG.standard_normal(16)
    xs, gs, bs = stored(x, dtype), stored(g, dtype), stored(b, dtype)
    eps = 0.25  # large, so that eps outside the root would be visible
    mean = xs.mean(-1, keepdims=True)
    var = ((xs - mean) ** 2).mean(-1, keepdims=True)  # biased
    want = (xs - mean) / np.sqrt(var + eps) * gs + bs
    t = tstr(dtype, x.shape)
    v = tstr(dtype, (16,))
    got = run("  %r = layernorm(%x, %g, %b) {eps = 0.25}",
              {"x": (t, to_dtype(x, dtype)), "g": (v, to_dtype(g, dtype)), "b": (v, to_dtype(b, dtype))}, t)
    close(got, want, dtype, ulps=64 if dtype == "f32" else 2)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_rmsnorm(dtype):
    x = RNG.standard_normal((4, 16)) * 2
    g = RNG.standard_normal(16)
    xs, gs = stored(x, dtype), stored(g, dtype)
    want = xs / np.sqrt((xs**2).mean(-1, keepdims=True) + 0.5) * gs
    t = tstr(dtype, x.shape)
    got = run("  %r = rmsnorm(%x, %g) {eps = 0.5}", {"x": (t, to_dtype(x, dtype)),
                                                     "g": (tstr(dtype, (16,)), to_dtype(g, dtype))}, t)
    close(got, want, dtype, ulps=32 if dtype == "f32" else 2)


def test_norm_default_eps():
    x = np.full((1, 4), 3.0, np.float32)
    g = np.ones(4, np.float32)
    got = run("  %r = rmsnorm(%x, %g)", {"x": ("f32[1, 4]", x), "g": ("f32[4]", g)}, "f32[1, 4]")
    close(got, np.full((1, 4), 3.0 / math.sqrt(9 + 1e-6)), "f32")
    b = np.zeros(4, np.float32)
    got = run("  %r = layernorm(%x, %g, %b)", {"x": ("f32[1, 4]", x), "g": ("f32[4]", g),
                                               "b": ("f32[4]", b)}, "f32[1, 4]")
    assert (got == 0).all()


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_rope_rotate_half_convention(dtype):
    seq, d = 5, 8
    x = RNG.standard_normal((2, seq, d))
    inv = 1.0 / (10000 ** (np.arange(0, d, 2) / d))
    ang = np.outer(np.arange(seq), inv)
    emb = np.concatenate([ang, ang], axis=-1)  # the Hugging Face layout
    cos, sin = np.cos(emb), np.sin(emb)
    xs, cs, ss = stored(x, dtype), stored(cos, dtype), stored(sin, dtype)
    rotated = np.concatenate([-xs[..., d // 2:], xs[..., : d // 2]], axis=-1)
    t = tstr(dtype, x.shape)
    tc = tstr(dtype, cos.shape)
    got = run("  %r = rope(%x, %c, %s)", {"x": (t, to_dtype(x, dtype)), "c": (tc, to_dtype(cos, dtype)),
                                          "s": (tc, to_dtype(sin, dtype))}, t)
    close(got, xs * cs + rotated * ss, dtype, ulps=8 if dtype == "f32" else 1)


def test_data_movement_ops():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    f = ("f32[2, 3, 4]", x)
    assert np.array_equal(run("  %r = reshape(%x) : f32[6, 4]", {"x": f}, "f32[6, 4]"), x.reshape(6, 4))
    assert np.array_equal(run("  %r = transpose(%x) {perm = [2, 0, 1]}", {"x": f}, "f32[4, 2, 3]"),
                          x.transpose(2, 0, 1))
    assert np.array_equal(run("  %r = transpose(%x)", {"x": f}, "f32[4, 3, 2]"), x.T)
    assert np.array_equal(run("  %r = concat(%x, %x) {axis = 1}", {"x": f}, "f32[2, 6, 4]"),
                          np.concatenate([x, x], axis=1))
    assert np.array_equal(run("  %r = slice(%x) {axis = -1, start = 1, stop = 3}", {"x": f}, "f32[2, 3, 2]"),
                          x[..., 1:3])
    table = RNG.standard_normal((10, 4)).astype(np.float16)
    ids = np.array([[3, 0], [9, 3]], np.int32)
    got = run("  %r = gather(%t, %i)", {"t": ("f16[10, 4]", table), "i": ("i32[2, 2]", ids)}, "f16[2, 2, 4]")
    assert np.array_equal(got, table[ids])
    got = run("  %r = iota() {axis = 1} : i32[2, 3]", {}, "i32[2, 3]")
    assert got.tolist() == [[0, 1, 2], [0, 1, 2]]
    got = run("  %r = constant() {value = [[1, 2], [3, 4]]} : bf16[2, 2]", {}, "bf16[2, 2]")
    assert got.tolist() == [[1, 2], [3, 4]]
    got = run("  %r = constant() {value = -inf} : f16[3]", {}, "f16[3]")
    assert (got == -np.inf).all() and got.dtype == np.float16
    row = np.array([[7, 7, 7, 7]], np.float32)
    base = np.zeros((5, 4), np.float32)
    got = run("  %r = update_slice(%b, %v, %p) {axis = 0}",
              {"b": ("f32[5, 4]", base), "v": ("f32[1, 4]", row), "p": ("i32[]", np.int32(3))}, "f32[5, 4]")
    want = base.copy()
    want[3] = 7
    assert np.array_equal(got, want)


def test_runtime_errors_are_located():
    table = np.zeros((4, 2), np.float32)
    with pytest.raises(LpuError, match=r"t.lpu:3:8: error: gather id 7 is outside the table's 4 rows"):
        run("  %r = gather(%t, %i)", {"t": ("f32[4, 2]", table), "i": ("i32[1]", np.array([7], np.int32))},
            "f32[1, 2]")
    with pytest.raises(LpuError, match="update_slice offset 2 does not fit"):
        run("  %r = update_slice(%b, %v, %p) {axis = 0}",
            {"b": ("f32[3]", np.zeros(3, np.float32)), "v": ("f32[2]", np.ones(2, np.float32)),
             "p": ("i32[]", np.int32(2))}, "f32[3]")


def test_state_persists_across_runs_and_commits_at_the_end():
    m = parse((ROOT / "tests" / "ir" / "kv_decode.lpu").read_text(), "kv_decode.lpu")
    rng = np.random.default_rng(0)
    weights = {p.name: rng.standard_normal(p.type.shape).astype(np.float16) for p in m.params}
    ref = Reference(m, weights)
    assert not ref.state["k_cache"].any()
    ref.run("decode", {"tok": np.array([5], np.int32), "pos": np.int32(0)})
    first = ref.state["k_cache"].copy()
    assert first[0].any() and not first[1:].any()
    ref.run("decode", {"tok": np.array([9], np.int32), "pos": np.int32(1)})
    assert np.array_equal(ref.state["k_cache"][0], first[0]) and ref.state["k_cache"][1].any()
    # the value written is the rotated key of the token
    x = weights["wte"][9:10].astype(np.float32)
    k0 = (x @ weights["wk"].astype(np.float32)).astype(np.float16).astype(np.float32)
    c, s = weights["cos"][9].astype(np.float32), weights["sin"][9].astype(np.float32)
    rot = np.concatenate([-k0[:, 8:], k0[:, :8]], axis=-1)
    assert np.array_equal(ref.state["k_cache"][1:2], (k0 * c + rot * s).astype(np.float16))


def test_graph_reads_state_at_entry_not_after_its_own_commit():
    text = """module m
state @s : f32[2]
graph step(%x: f32[2]) -> (f32[2]) {
  %n = add(@s, %x)
  commit @s = %n
  %old = add(@s, %x)
  return %old
}
"""
    ref = Reference(parse(text))
    one = np.ones(2, np.float32)
    assert ref.run("step", {"x": one}).__getitem__(0).tolist() == [1, 1]
    assert ref.run("step", {"x": one})[0].tolist() == [2, 2]
    assert ref.state["s"].tolist() == [2, 2]


def test_a_returned_state_is_its_value_at_the_start_of_the_run():
    ref = Reference(parse("module m\nstate @s : f32[2]\ngraph g(%x: f32[2]) -> (f32[2]) {\n"
                          "  commit @s = %x\n  return @s\n}\n"))  # fmt: skip
    assert ref.run("g", {"x": np.ones(2, np.float32)})[0].tolist() == [0, 0]
    assert ref.run("g", {"x": np.full(2, 5, np.float32)})[0].tolist() == [1, 1]
    assert ref.state["s"].tolist() == [5, 5]


@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=16))
def test_property_f16_add_matches_exact_sum_rounded_once(values):
    x = np.array(values, np.float32).astype(np.float16)
    got = run("  %r = add(%x, %x)", {"x": (f"f16[{len(values)}]", x)}, f"f16[{len(values)}]")
    want = (x.astype(np.float64) * 2).astype(np.float16)
    assert np.array_equal(got, want)


@given(modules(max_ops=10))
def test_property_every_generated_module_runs_with_declared_types(m):
    from lpu.arrays import random_inputs, random_weights

    ref = Reference(m, random_weights(m, seed=0))
    for g in m.graphs:
        try:
            outs = ref.run(g.name, random_inputs(m, g, seed=0))
        except LpuError as e:  # only the documented run-time refusals may happen
            assert "gather id" in str(e) or "update_slice offset" in str(e), str(e)
            continue
        assert len(outs) == len(g.result_types)
        for out, t in zip(outs, g.result_types):
            assert out.shape == t.shape and out.dtype == np.dtype(STORAGE[t.dtype])
    for s in m.states:
        assert ref.state[s.name].shape == s.type.shape

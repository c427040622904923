"""What the model families share: IR text building, weights, and numpy numerics that round where
the IR rounds (so a direct numpy forward pass agrees with the emulator to the last bit, up to the
order of f32 sums)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from isa.diagnostics import error
from isa.numerics import from_f32

DTYPES = ("f16", "bf16", "i8")


def act_dtype(dtype: str) -> str:
    """The dtype activations are computed in: the model's, or f16 for int8 weights."""
    return "f16" if dtype == "i8" else dtype


def quantized(name: str, shape: tuple[int, ...], dtype: str) -> bool:
    """Whether an int8 model stores this param as int8 (matrices that multiply activations; not
    embeddings, positions or rotary tables)."""
    return (
        dtype == "i8"
        and len(shape) == 2
        and not any(k in name for k in ("wte", "wpe", "embed_tokens", "embeddings", "rope."))
    )


def declarations(shapes: dict[str, tuple[int, ...]], dtype: str) -> list[str]:
    """`param` lines: an int8 matrix also gets `NAME.scale : f16[out]`, one scale per column."""
    out = []
    for name, shape in shapes.items():
        if quantized(name, shape, dtype):
            out += [f"param @{name} : {ty('i8', *shape)}", f"param @{name}.scale : {ty('f16', shape[1])}"]
        else:
            out.append(f"param @{name} : {ty(act_dtype(dtype), *shape)}")
    return out


def quantize(weights: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """For an int8 model: each quantized matrix becomes int8 with a per-column f16 scale
    (symmetric, the largest magnitude of a column maps to 127); others are left as they are."""
    if dtype != "i8":
        return weights
    out = {}
    for name, w in weights.items():
        w = np.asarray(w, np.float64)
        if quantized(name, w.shape, dtype):
            scale = storage(np.maximum(np.abs(w).max(0), 1e-8) / 127.0, "f16").astype(np.float64)
            out[name] = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
            out[f"{name}.scale"] = scale.astype(np.float16)
        else:
            out[name] = weights[name]
    return out


def linear(t: Text, x: str, name: str, dtype: str, hint: str = "mm") -> str:
    """`x @ W`; for an int8 W: `(x @ cast(W)) * W.scale` (the scale is per output column)."""
    if dtype != "i8":
        return t.op(f"matmul(%{x}, @{name})", hint)
    wq = t.op(f'cast(@{name}) {{to = "f16"}}', "wq")
    return t.op(f"mul(%{t.op(f'matmul(%{x}, %{wq})', hint)}, @{name}.scale)", hint)


class Text:
    """Accumulates the statements of one graph; `op` returns the new value's name."""

    def __init__(self):
        self.lines: list[str] = []
        self.count = 0

    def op(self, expr: str, hint: str = "t") -> str:
        self.count += 1
        name = f"{hint}{self.count}"
        self.lines.append(f"  %{name} = {expr}")
        return name

    def commit(self, state: str, value: str) -> None:
        self.lines.append(f"  commit @{state} = %{value}")

    def body(self) -> str:
        return "\n".join(self.lines)


def ty(dtype: str, *shape: int) -> str:
    return f"{dtype}[{', '.join(str(d) for d in shape)}]"


def graph(name: str, args: list[tuple[str, str]], results: list[tuple[str, str]], t: Text) -> str:
    sig = ", ".join(f"%{a}: {at}" for a, at in args)
    outs = ", ".join(rt for _, rt in results)
    ret = ", ".join(f"%{r}" for r, _ in results)
    return f"graph {name}({sig}) -> ({outs}) {{\n{t.body()}\n  return {ret}\n}}\n"


def check_config(cfg) -> None:
    """Refuse impossible sizes with a message naming the option."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.type == "int" and (not isinstance(v, int) or isinstance(v, bool)):
            raise error(f"{f.name.replace('_', '-')} must be an integer, got {v!r}")
        if f.type == "float" and (not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0):
            raise error(f"{f.name.replace('_', '-')} must be a positive number, got {v!r}")
        if f.name == "dtype":
            if v not in DTYPES:
                raise error(f"--dtype {v}: the builders make {', '.join(DTYPES)} models")
        elif isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise error(f"--{f.name.replace('_', '-')} must be at least 1, got {v}")
    if cfg.d_model % cfg.heads:
        raise error(f"--d-model {cfg.d_model} must be a multiple of --heads {cfg.heads}")
    if (cfg.d_model // cfg.heads) % 2 and getattr(cfg, "rope", False):
        raise error(f"the head dimension {cfg.d_model // cfg.heads} must be even for RoPE")


@dataclass
class Weights:
    """Seeded random weights: fan-in scaled normals for matrices, near-one norm gains, small
    biases; rounded to the model's dtype."""

    rng: np.random.Generator
    dtype: str  # float weights are made in the activation dtype; `quantize` makes int8 ones

    def matrix(self, rows: int, cols: int) -> np.ndarray:
        return self.store(self.rng.standard_normal((rows, cols)) / math.sqrt(rows))

    def embedding(self, rows: int, cols: int) -> np.ndarray:
        return self.store(self.rng.standard_normal((rows, cols)))

    def gain(self, n: int) -> np.ndarray:
        return self.store(1.0 + 0.1 * self.rng.standard_normal(n))

    def bias(self, n: int) -> np.ndarray:
        return self.store(0.1 * self.rng.standard_normal(n))

    def store(self, x: np.ndarray) -> np.ndarray:
        return storage(x, act_dtype(self.dtype))


def storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """An array in the storage form of `dtype` (bf16: float32 holding bf16 values)."""
    return from_f32(np.asarray(x, np.float64), dtype)


def lin(num: Num, f: dict, x, name: str) -> np.ndarray:
    """The numpy twin of `linear`."""
    if f"{name}.scale" in f:
        return num.mul(num.matmul(x, f[name]), f[f"{name}.scale"])
    return num.matmul(x, f[name])


class Num:
    """numpy numerics with the IR's rounding: every op's result is rounded to the model's dtype;
    composites (layernorm, softmax, gelu, ...) are computed in float64 and rounded once."""

    def __init__(self, dtype: str):
        self.dtype = act_dtype(dtype)

    def r(self, x) -> np.ndarray:
        return storage(x, self.dtype).astype(np.float64)

    def matmul(self, a, b) -> np.ndarray:
        return self.r(np.asarray(a, np.float64) @ np.asarray(b, np.float64))

    def add(self, a, b) -> np.ndarray:
        return self.r(np.asarray(a, np.float64) + b)

    def mul(self, a, b) -> np.ndarray:
        return self.r(np.asarray(a, np.float64) * b)

    def layernorm(self, x, g, b, eps) -> np.ndarray:
        x = np.asarray(x, np.float64)
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return self.r((x - m) / np.sqrt(v + eps) * g + b)

    def rmsnorm(self, x, g, eps) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return self.r(x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g)

    def softmax(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        e = np.exp(x - x.max(-1, keepdims=True))
        return self.r(e / e.sum(-1, keepdims=True))

    def gelu_tanh(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return self.r(x / (1 + np.exp(-2 * u)))

    def gelu_erf(self, x) -> np.ndarray:
        from math import erf

        x = np.asarray(x, np.float64)
        return self.r(0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2))))

    def silu(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return self.r(x / (1 + np.exp(-x)))

    def rope(self, x, cos, sin) -> np.ndarray:
        x = np.asarray(x, np.float64)
        h = x.shape[-1] // 2
        rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
        return self.r(x * cos + rot * sin)


def causal_attention(num: Num, q, k, v, scale) -> np.ndarray:
    """q [H, n, dh], k and v [H, n, dh]: causal softmax attention with the IR's rounding."""
    s = num.matmul(q, np.swapaxes(k, -1, -2))
    s = num.mul(s, num.r(scale))
    n = s.shape[-1]
    s = np.where(np.triu(np.ones((n, n), bool), 1), -np.inf, s)
    return num.matmul(num.softmax(s), v)


def greedy(logits_of, prompt: list[int], tokens: int) -> list[int]:
    """Greedy decoding with a full forward pass per step: `logits_of(ids)` gives [len(ids), vocab]."""
    ids = list(prompt)
    out = []
    for _ in range(tokens):
        nxt = int(np.argmax(logits_of(ids)[-1]))
        out.append(nxt)
        ids.append(nxt)
    return out

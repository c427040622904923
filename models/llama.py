"""Llama: RMSNorm, rotary positions (RoPE), SwiGLU MLP, grouped-query attention, untied LM head.

Param names are Hugging Face's (`model.layers.0.self_attn.q_proj.weight`, ...), but every
projection is stored [in, out] (the transpose of an `nn.Linear` weight), as `matmul(x, w)`
wants; the importer transposes. `rope.cos` and `rope.sin` : DT[max_seq, head_dim] are the
rotary tables (derived from `rope_theta`, not in a checkpoint; the builder and the importer
compute them). Entry points and the KV cache are as for GPT-2 (models/gpt2.py); the cache holds
the `kv_heads` heads only: `state @cache.{l}.k : DT[max_seq, kv_heads * head_dim]`.

Grouped-query attention: query head h uses key/value head h // (heads / kv_heads), as Hugging
Face's `repeat_kv` does; the IR groups the query heads ([kv_heads, group * rows, head_dim])
instead of repeating the keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from isa.diagnostics import error
from models.common import (
    Num,
    Text,
    Weights,
    act_dtype,
    check_config,
    declarations,
    graph,
    lin,
    linear,
    quantize,
    storage,
    ty,
)


@dataclass
class LlamaConfig:
    layers: int = 2
    d_model: int = 64
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 128
    vocab: int = 128
    max_seq: int = 16
    dtype: str = "f16"
    eps: float = 1e-6
    rope_theta: float = 10000.0
    rope: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


def _check(c: LlamaConfig) -> None:
    check_config(c)
    if c.heads % c.kv_heads:
        raise error(f"--heads {c.heads} must be a multiple of --kv-heads {c.kv_heads}")


def param_shapes(c: LlamaConfig) -> dict[str, tuple[int, ...]]:
    d, f, dh = c.d_model, c.ffn, c.head_dim
    out = {"model.embed_tokens.weight": (c.vocab, d)}
    for i in range(c.layers):
        p = f"model.layers.{i}"
        out |= {
            f"{p}.input_layernorm.weight": (d,),
            f"{p}.self_attn.q_proj.weight": (d, c.heads * dh),
            f"{p}.self_attn.k_proj.weight": (d, c.kv_heads * dh),
            f"{p}.self_attn.v_proj.weight": (d, c.kv_heads * dh),
            f"{p}.self_attn.o_proj.weight": (c.heads * dh, d),
            f"{p}.post_attention_layernorm.weight": (d,),
            f"{p}.mlp.gate_proj.weight": (d, f),
            f"{p}.mlp.up_proj.weight": (d, f),
            f"{p}.mlp.down_proj.weight": (f, d),
        }
    return out | {
        "model.norm.weight": (d,),
        "lm_head.weight": (d, c.vocab),
        "rope.cos": (c.max_seq, dh),
        "rope.sin": (c.max_seq, dh),
    }


def rope_tables(c: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
    dh = c.head_dim
    inv = 1.0 / (c.rope_theta ** (np.arange(0, dh, 2) / dh))
    angles = np.arange(c.max_seq)[:, None] * inv[None, :]
    angles = np.concatenate([angles, angles], axis=1)
    return storage(np.cos(angles), act_dtype(c.dtype)), storage(np.sin(angles), act_dtype(c.dtype))


def module_text(c: LlamaConfig) -> str:
    _check(c)
    dt, S, G, dh = act_dtype(c.dtype), c.max_seq, c.kv_heads, c.head_dim
    head = [
        f"# Llama: {c.layers} layers, d_model {c.d_model}, {c.heads} heads ({G} kv), ffn {c.ffn}, "
        f"vocab {c.vocab}, max_seq {S}",
        "module llama",
    ]
    head += declarations(param_shapes(c), c.dtype)
    for i in range(c.layers):
        head += [f"state @cache.{i}.k : {ty(dt, S, G * dh)}", f"state @cache.{i}.v : {ty(dt, S, G * dh)}"]
    return "\n".join(head) + "\n\n" + _prefill(c) + "\n" + _decode(c)


def _block(c: LlamaConfig, t: Text, x: str, i: int, n: int, cos: str, sin: str, mask: str, kv) -> str:
    dt, H, G, dh, S = act_dtype(c.dtype), c.heads, c.kv_heads, c.head_dim, c.max_seq
    r = H // G
    p = f"model.layers.{i}"
    h = t.op(f"rmsnorm(%{x}, @{p}.input_layernorm.weight) {{eps = {c.eps}}}", "n")
    q = linear(t, h, f"{p}.self_attn.q_proj.weight", c.dtype, "q")
    k = linear(t, h, f"{p}.self_attn.k_proj.weight", c.dtype, "k")
    v = linear(t, h, f"{p}.self_attn.v_proj.weight", c.dtype, "v")
    q3 = t.op(f"rope(%{t.op(f'reshape(%{q}) : {ty(dt, n, H, dh)}', 'q')}, %{cos}, %{sin})", "q")
    k3 = t.op(f"rope(%{t.op(f'reshape(%{k}) : {ty(dt, n, G, dh)}', 'k')}, %{cos}, %{sin})", "k")
    k2 = t.op(f"reshape(%{k3}) : {ty(dt, n, G * dh)}", "k")
    keys, values = kv(k2, v)
    qg = t.op(f"reshape(%{q3}) : {ty(dt, n, G, r, dh)}", "q")
    qg = t.op(
        f"reshape(%{t.op(f'transpose(%{qg}) {{perm = [1, 2, 0, 3]}}', 'q')}) : {ty(dt, G, r * n, dh)}", "q"
    )
    kt = t.op(f"transpose(%{t.op(f'reshape(%{keys}) : {ty(dt, S, G, dh)}', 'k')}) {{perm = [1, 2, 0]}}", "kt")
    vh = t.op(
        f"transpose(%{t.op(f'reshape(%{values}) : {ty(dt, S, G, dh)}', 'v')}) {{perm = [1, 0, 2]}}", "vh"
    )
    s = t.op(f"matmul(%{qg}, %{kt})", "s")
    scale = t.op(f"constant() {{value = {1 / math.sqrt(dh)!r}}} : {dt}[]", "scale")
    ss = t.op(f"mul(%{s}, %{scale})", "s")
    ninf = t.op(f"constant() {{value = -inf}} : {dt}[]", "ninf")
    pr = t.op(f"softmax(%{t.op(f'where(%{mask}, %{ninf}, %{ss})', 's')}) {{axis = -1}}", "p")
    o = t.op(f"reshape(%{t.op(f'matmul(%{pr}, %{vh})', 'o')}) : {ty(dt, G, r, n, dh)}", "o")
    o = t.op(f"reshape(%{t.op(f'transpose(%{o}) {{perm = [2, 0, 1, 3]}}', 'o')}) : {ty(dt, n, H * dh)}", "o")
    x1 = t.op(f"add(%{x}, %{linear(t, o, f'{p}.self_attn.o_proj.weight', c.dtype, 'a')})", "x")
    h2 = t.op(f"rmsnorm(%{x1}, @{p}.post_attention_layernorm.weight) {{eps = {c.eps}}}", "n")
    gate = t.op(f"silu(%{linear(t, h2, f'{p}.mlp.gate_proj.weight', c.dtype, 'gate')})", "gate")
    up = linear(t, h2, f"{p}.mlp.up_proj.weight", c.dtype, "up")
    m = linear(t, t.op(f"mul(%{gate}, %{up})", "act"), f"{p}.mlp.down_proj.weight", c.dtype, "m")
    return t.op(f"add(%{x1}, %{m})", "x")


def _head(c: LlamaConfig, t: Text, x: str) -> str:
    n = t.op(f"rmsnorm(%{x}, @model.norm.weight) {{eps = {c.eps}}}", "n")
    return linear(t, n, "lm_head.weight", c.dtype, "logits")


def _mask(c: LlamaConfig, t: Text, n: int, pos: str | None) -> str:
    """[1, group * n, max_seq]: true where the key is in the future of the query row, the same for
    every key/value head (`where` broadcasts it; one per head would be kv_heads times the constant
    on every chip of a stage: 1.3 MB for Llama-70B's prefill)."""
    G, r, S = 1, c.heads // c.kv_heads, c.max_seq
    col = t.op(f"iota() {{axis = 3}} : {ty('i32', G, r, n, S)}", "col")
    if pos is None:
        row = t.op(f"iota() {{axis = 2}} : {ty('i32', G, r, n, S)}", "row")
        future = t.op(f"greater(%{col}, %{row})", "future")
    else:
        future = t.op(f"greater(%{col}, %{pos})", "future")
    return t.op(f"reshape(%{future}) : {ty('bool', G, r * n, S)}", "future")


def _prefill(c: LlamaConfig) -> str:
    dt, S, dh = act_dtype(c.dtype), c.max_seq, c.head_dim
    t = Text()
    x = t.op("gather(@model.embed_tokens.weight, %ids)", "x")
    cos = t.op(f"reshape(@rope.cos) : {ty(dt, S, 1, dh)}", "cos")
    sin = t.op(f"reshape(@rope.sin) : {ty(dt, S, 1, dh)}", "sin")
    mask = _mask(c, t, S, None)
    for i in range(c.layers):

        def kv(k, v, i=i):
            t.commit(f"cache.{i}.k", k)
            t.commit(f"cache.{i}.v", v)
            return k, v

        x = _block(c, t, x, i, S, cos, sin, mask, kv)
    one = t.op("constant() {value = 1} : i32[]", "one")
    last = t.op(f"reshape(%{t.op(f'sub(%len, %{one})', 'last')}) : i32[1]", "last")
    logits = _head(c, t, t.op(f"gather(%{x}, %{last})", "x"))
    return graph("prefill", [("ids", ty("i32", S)), ("len", "i32[]")], [(logits, ty(dt, 1, c.vocab))], t)


def _decode(c: LlamaConfig) -> str:
    dt, dh = act_dtype(c.dtype), c.head_dim
    t = Text()
    x = t.op("gather(@model.embed_tokens.weight, %tok)", "x")
    p1 = t.op("reshape(%pos) : i32[1]", "p")
    cos = t.op(f"reshape(%{t.op(f'gather(@rope.cos, %{p1})', 'cos')}) : {ty(dt, 1, 1, dh)}", "cos")
    sin = t.op(f"reshape(%{t.op(f'gather(@rope.sin, %{p1})', 'sin')}) : {ty(dt, 1, 1, dh)}", "sin")
    mask = _mask(c, t, 1, "pos")
    for i in range(c.layers):

        def kv(k, v, i=i):
            kc = t.op(f"update_slice(@cache.{i}.k, %{k}, %pos) {{axis = 0}}", "kc")
            vc = t.op(f"update_slice(@cache.{i}.v, %{v}, %pos) {{axis = 0}}", "vc")
            t.commit(f"cache.{i}.k", kc)
            t.commit(f"cache.{i}.v", vc)
            return kc, vc

        x = _block(c, t, x, i, 1, cos, sin, mask, kv)
    logits = _head(c, t, x)
    return graph("decode", [("tok", "i32[1]"), ("pos", "i32[]")], [(logits, ty(dt, 1, c.vocab))], t)


def random_weights(c: LlamaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    w = Weights(np.random.default_rng(seed), c.dtype)
    out = {}
    for name, shape in param_shapes(c).items():
        if name.startswith("rope."):
            continue
        if name == "model.embed_tokens.weight":
            out[name] = w.embedding(*shape)
        elif len(shape) == 1:
            out[name] = w.gain(*shape)
        else:
            out[name] = w.matrix(*shape)
    out["rope.cos"], out["rope.sin"] = rope_tables(c)
    return quantize(out, c.dtype)


def logits(c: LlamaConfig, w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """A direct numpy forward pass (no cache, keys and values repeated per query head as Hugging
    Face does): logits [len(ids), vocab], rounded as the IR rounds."""
    num = Num(c.dtype)
    n, H, G, dh = len(ids), c.heads, c.kv_heads, c.head_dim
    f = {k: np.asarray(v, np.float64) for k, v in w.items()}
    cos, sin = f["rope.cos"][:n, None, :], f["rope.sin"][:n, None, :]
    x = f["model.embed_tokens.weight"][ids]
    for i in range(c.layers):
        p = f"model.layers.{i}"
        h = num.rmsnorm(x, f[f"{p}.input_layernorm.weight"], c.eps)
        q = num.rope(lin(num, f, h, f"{p}.self_attn.q_proj.weight").reshape(n, H, dh), cos, sin)
        k = num.rope(lin(num, f, h, f"{p}.self_attn.k_proj.weight").reshape(n, G, dh), cos, sin)
        v = lin(num, f, h, f"{p}.self_attn.v_proj.weight").reshape(n, G, dh)
        k = np.repeat(k, H // G, axis=1).transpose(1, 0, 2)
        v = np.repeat(v, H // G, axis=1).transpose(1, 0, 2)
        s = num.mul(num.matmul(q.transpose(1, 0, 2), k.transpose(0, 2, 1)), num.r(1 / math.sqrt(dh)))
        s = np.where(np.triu(np.ones((n, n), bool), 1), -np.inf, s)
        o = num.matmul(num.softmax(s), v).transpose(1, 0, 2).reshape(n, H * dh)
        x1 = num.add(x, lin(num, f, o, f"{p}.self_attn.o_proj.weight"))
        h2 = num.rmsnorm(x1, f[f"{p}.post_attention_layernorm.weight"], c.eps)
        act = num.mul(
            num.silu(lin(num, f, h2, f"{p}.mlp.gate_proj.weight")),
            lin(num, f, h2, f"{p}.mlp.up_proj.weight"),
        )
        x = num.add(x1, lin(num, f, act, f"{p}.mlp.down_proj.weight"))
    return lin(num, f, num.rmsnorm(x, f["model.norm.weight"], c.eps), "lm_head.weight")

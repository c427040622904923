"""GPT-2: learned positions, pre-layernorm blocks, fused QKV, tanh-GELU MLP, tied embeddings.

Param names are Hugging Face's (`transformer.h.0.attn.c_attn.weight`, ...). GPT-2's Conv1D
weights are already [in, out], as `matmul(x, w)` wants. The tied LM head is the param
`lm_head.weight` stored [d_model, vocab] (the transpose of `transformer.wte.weight`, which
random weights and the importer fill in), so no decode step transposes the embedding.

Entry points (one compiled program serves a whole generation):

    prefill(%ids: i32[max_seq], %len: i32[]) -> (DT[1, vocab])  # prompt padded to max_seq;
                                                                 # logits of position len - 1
    decode(%tok: i32[1], %pos: i32[]) -> (DT[1, vocab])          # one token at position pos

The KV cache is `state @cache.{l}.k` / `.v` : DT[max_seq, d_model]: prefill writes all of
it (positions past the prompt hold values that decoding overwrites before reading), decode
writes row `pos` with `update_slice` and attends to rows <= pos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.common import (
    Num,
    Text,
    Weights,
    act_dtype,
    causal_attention,
    check_config,
    declarations,
    graph,
    lin,
    linear,
    quantize,
    ty,
)


@dataclass
class GPT2Config:
    layers: int = 2
    d_model: int = 64
    heads: int = 4
    ffn: int = 256
    vocab: int = 128
    max_seq: int = 16
    dtype: str = "f16"
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


def param_shapes(c: GPT2Config) -> dict[str, tuple[int, ...]]:
    d, f = c.d_model, c.ffn
    out = {"transformer.wte.weight": (c.vocab, d), "transformer.wpe.weight": (c.max_seq, d)}
    for i in range(c.layers):
        h = f"transformer.h.{i}"
        out |= {
            f"{h}.ln_1.weight": (d,),
            f"{h}.ln_1.bias": (d,),
            f"{h}.attn.c_attn.weight": (d, 3 * d),
            f"{h}.attn.c_attn.bias": (3 * d,),
            f"{h}.attn.c_proj.weight": (d, d),
            f"{h}.attn.c_proj.bias": (d,),
            f"{h}.ln_2.weight": (d,),
            f"{h}.ln_2.bias": (d,),
            f"{h}.mlp.c_fc.weight": (d, f),
            f"{h}.mlp.c_fc.bias": (f,),
            f"{h}.mlp.c_proj.weight": (f, d),
            f"{h}.mlp.c_proj.bias": (d,),
        }
    out |= {"transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,), "lm_head.weight": (d, c.vocab)}
    return out


def module_text(c: GPT2Config) -> str:
    check_config(c)
    dt, d, S, H = act_dtype(c.dtype), c.d_model, c.max_seq, c.heads
    head = [f"# GPT-2: {c.layers} layers, d_model {d}, {H} heads, ffn {c.ffn}, vocab {c.vocab}, max_seq {S}"]
    head.append("module gpt2")
    head += declarations(param_shapes(c), c.dtype)
    for i in range(c.layers):
        head += [f"state @cache.{i}.k : {ty(dt, S, d)}", f"state @cache.{i}.v : {ty(dt, S, d)}"]
    return "\n".join(head) + "\n\n" + _prefill(c) + "\n" + _decode(c)


def _block(c: GPT2Config, t: Text, x: str, i: int, n: int, kv) -> str:
    """One layer on n rows; kv(k, v) stores the new keys/values and returns (keys, values, mask)."""
    dt, d, H, dh = act_dtype(c.dtype), c.d_model, c.heads, c.head_dim
    h = f"transformer.h.{i}"
    ln = t.op(f"layernorm(%{x}, @{h}.ln_1.weight, @{h}.ln_1.bias) {{eps = {c.eps}}}", "ln")
    qkv = t.op(
        f"add(%{linear(t, ln, f'{h}.attn.c_attn.weight', c.dtype, 'qkv')}, @{h}.attn.c_attn.bias)", "qkv"
    )
    q, k, v = (
        t.op(f"slice(%{qkv}) {{axis = 1, start = {j * d}, stop = {(j + 1) * d}}}", n_)
        for j, n_ in enumerate("qkv")
    )
    keys, values, mask = kv(k, v)
    S = c.max_seq
    qh = t.op(f"transpose(%{t.op(f'reshape(%{q}) : {ty(dt, n, H, dh)}', 'q')}) {{perm = [1, 0, 2]}}", "qh")
    kt = t.op(f"transpose(%{t.op(f'reshape(%{keys}) : {ty(dt, S, H, dh)}', 'k')}) {{perm = [1, 2, 0]}}", "kt")
    vh = t.op(
        f"transpose(%{t.op(f'reshape(%{values}) : {ty(dt, S, H, dh)}', 'v')}) {{perm = [1, 0, 2]}}", "vh"
    )
    s = t.op(f"matmul(%{qh}, %{kt})", "s")
    scale = t.op(f"constant() {{value = {1 / math.sqrt(dh)!r}}} : {dt}[]", "scale")
    ss = t.op(f"mul(%{s}, %{scale})", "s")
    ninf = t.op(f"constant() {{value = -inf}} : {dt}[]", "ninf")
    p = t.op(f"softmax(%{t.op(f'where(%{mask}, %{ninf}, %{ss})', 's')}) {{axis = -1}}", "p")
    o = t.op(f"matmul(%{p}, %{vh})", "o")
    o2 = t.op(f"reshape(%{t.op(f'transpose(%{o}) {{perm = [1, 0, 2]}}', 'o')}) : {ty(dt, n, d)}", "o")
    a = t.op(f"add(%{linear(t, o2, f'{h}.attn.c_proj.weight', c.dtype, 'a')}, @{h}.attn.c_proj.bias)", "a")
    x1 = t.op(f"add(%{x}, %{a})", "x")
    ln2 = t.op(f"layernorm(%{x1}, @{h}.ln_2.weight, @{h}.ln_2.bias) {{eps = {c.eps}}}", "ln")
    fc = t.op(f"add(%{linear(t, ln2, f'{h}.mlp.c_fc.weight', c.dtype, 'fc')}, @{h}.mlp.c_fc.bias)", "fc")
    g = t.op(f'gelu(%{fc}) {{approximate = "tanh"}}', "g")
    m = t.op(f"add(%{linear(t, g, f'{h}.mlp.c_proj.weight', c.dtype, 'm')}, @{h}.mlp.c_proj.bias)", "m")
    return t.op(f"add(%{x1}, %{m})", "x")


def _head(c: GPT2Config, t: Text, x: str) -> str:
    ln = t.op(f"layernorm(%{x}, @transformer.ln_f.weight, @transformer.ln_f.bias) {{eps = {c.eps}}}", "ln")
    return linear(t, ln, "lm_head.weight", c.dtype, "logits")


def _prefill(c: GPT2Config) -> str:
    dt, S = act_dtype(c.dtype), c.max_seq
    t = Text()
    te = t.op("gather(@transformer.wte.weight, %ids)", "te")
    x = t.op(f"add(%{te}, @transformer.wpe.weight)", "x")
    row = t.op(f"iota() {{axis = 1}} : {ty('i32', c.heads, S, S)}", "col")
    col_ = t.op(f"iota() {{axis = 2}} : {ty('i32', c.heads, S, S)}", "col")
    mask = t.op(f"greater(%{col_}, %{row})", "future")
    for i in range(c.layers):

        def kv(k, v, i=i):
            t.commit(f"cache.{i}.k", k)
            t.commit(f"cache.{i}.v", v)
            return k, v, mask

        x = _block(c, t, x, i, S, kv)
    one = t.op("constant() {value = 1} : i32[]", "one")
    last = t.op(f"reshape(%{t.op(f'sub(%len, %{one})', 'last')}) : i32[1]", "last")
    xl = t.op(f"gather(%{x}, %{last})", "x")
    logits = _head(c, t, xl)
    return graph("prefill", [("ids", ty("i32", S)), ("len", "i32[]")], [(logits, ty(dt, 1, c.vocab))], t)


def _decode(c: GPT2Config) -> str:
    dt, S = act_dtype(c.dtype), c.max_seq
    t = Text()
    te = t.op("gather(@transformer.wte.weight, %tok)", "te")
    pe = t.op(f"gather(@transformer.wpe.weight, %{t.op('reshape(%pos) : i32[1]', 'p')})", "pe")
    x = t.op(f"add(%{te}, %{pe})", "x")
    col = t.op(f"iota() {{axis = 2}} : {ty('i32', c.heads, 1, S)}", "col")
    mask = t.op(f"greater(%{col}, %pos)", "future")
    for i in range(c.layers):

        def kv(k, v, i=i):
            kc = t.op(f"update_slice(@cache.{i}.k, %{k}, %pos) {{axis = 0}}", "kc")
            vc = t.op(f"update_slice(@cache.{i}.v, %{v}, %pos) {{axis = 0}}", "vc")
            t.commit(f"cache.{i}.k", kc)
            t.commit(f"cache.{i}.v", vc)
            return kc, vc, mask

        x = _block(c, t, x, i, 1, kv)
    logits = _head(c, t, x)
    return graph("decode", [("tok", "i32[1]"), ("pos", "i32[]")], [(logits, ty(dt, 1, c.vocab))], t)


def random_weights(c: GPT2Config, seed: int = 0) -> dict[str, np.ndarray]:
    w = Weights(np.random.default_rng(seed), c.dtype)
    out = {}
    for name, shape in param_shapes(c).items():
        if name == "lm_head.weight":
            continue
        if name.endswith(("wte.weight", "wpe.weight")):
            out[name] = w.embedding(*shape)
        elif name.endswith("bias"):
            out[name] = w.bias(*shape)
        elif len(shape) == 1:
            out[name] = w.gain(*shape)
        else:
            out[name] = w.matrix(*shape)
    out["lm_head.weight"] = np.ascontiguousarray(out["transformer.wte.weight"].T)
    return quantize(out, c.dtype)


def logits(c: GPT2Config, w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """A direct numpy forward pass over `ids` (no cache): logits [len(ids), vocab], rounded as the IR
    rounds."""
    num = Num(c.dtype)
    n, d, H, dh = len(ids), c.d_model, c.heads, c.head_dim
    f = {k: np.asarray(v, np.float64) for k, v in w.items()}
    x = num.add(f["transformer.wte.weight"][ids], f["transformer.wpe.weight"][:n])
    for i in range(c.layers):
        h = f"transformer.h.{i}"
        ln = num.layernorm(x, f[f"{h}.ln_1.weight"], f[f"{h}.ln_1.bias"], c.eps)
        qkv = num.add(lin(num, f, ln, f"{h}.attn.c_attn.weight"), f[f"{h}.attn.c_attn.bias"])
        q, k, v = (qkv[:, j * d : (j + 1) * d].reshape(n, H, dh).transpose(1, 0, 2) for j in range(3))
        o = causal_attention(num, q, k, v, 1 / math.sqrt(dh)).transpose(1, 0, 2).reshape(n, d)
        a = num.add(lin(num, f, o, f"{h}.attn.c_proj.weight"), f[f"{h}.attn.c_proj.bias"])
        x1 = num.add(x, a)
        ln2 = num.layernorm(x1, f[f"{h}.ln_2.weight"], f[f"{h}.ln_2.bias"], c.eps)
        fc = num.add(lin(num, f, ln2, f"{h}.mlp.c_fc.weight"), f[f"{h}.mlp.c_fc.bias"])
        m = num.add(lin(num, f, num.gelu_tanh(fc), f"{h}.mlp.c_proj.weight"), f[f"{h}.mlp.c_proj.bias"])
        x = num.add(x1, m)
    ln = num.layernorm(x, f["transformer.ln_f.weight"], f["transformer.ln_f.bias"], c.eps)
    return lin(num, f, ln, "lm_head.weight")

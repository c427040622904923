"""BERT encoder: word, position and token-type embeddings, post-layernorm blocks, erf-GELU.

Param names are Hugging Face's `BertModel` names (`bert.encoder.layer.0.attention.self.query.weight`,
...), every dense weight stored [in, out] (the transpose of `nn.Linear`'s; the importer
transposes). One entry point:

    encode(%ids: i32[max_seq], %types: i32[max_seq]) -> (DT[max_seq, d_model])
                                     # with pooling: -> (DT[max_seq, d_model], DT[1, d_model])

Attention is over all max_seq positions (no padding mask); `pooling = True` adds the mean over
positions of the last hidden state.
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
    check_config,
    declarations,
    graph,
    lin,
    linear,
    quantize,
    ty,
)


@dataclass
class BertConfig:
    layers: int = 2
    d_model: int = 64
    heads: int = 4
    ffn: int = 256
    vocab: int = 128
    max_seq: int = 16
    dtype: str = "f16"
    eps: float = 1e-12
    type_vocab: int = 2
    pooling: bool = False

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


def param_shapes(c: BertConfig) -> dict[str, tuple[int, ...]]:
    d, f = c.d_model, c.ffn
    e = "bert.embeddings"
    out = {
        f"{e}.word_embeddings.weight": (c.vocab, d),
        f"{e}.position_embeddings.weight": (c.max_seq, d),
        f"{e}.token_type_embeddings.weight": (c.type_vocab, d),
        f"{e}.LayerNorm.weight": (d,),
        f"{e}.LayerNorm.bias": (d,),
    }
    for i in range(c.layers):
        p = f"bert.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            out |= {f"{p}.attention.self.{name}.weight": (d, d), f"{p}.attention.self.{name}.bias": (d,)}
        out |= {
            f"{p}.attention.output.dense.weight": (d, d),
            f"{p}.attention.output.dense.bias": (d,),
            f"{p}.attention.output.LayerNorm.weight": (d,),
            f"{p}.attention.output.LayerNorm.bias": (d,),
            f"{p}.intermediate.dense.weight": (d, f),
            f"{p}.intermediate.dense.bias": (f,),
            f"{p}.output.dense.weight": (f, d),
            f"{p}.output.dense.bias": (d,),
            f"{p}.output.LayerNorm.weight": (d,),
            f"{p}.output.LayerNorm.bias": (d,),
        }
    return out


def module_text(c: BertConfig) -> str:
    check_config(c)
    dt, d, S, H, dh = act_dtype(c.dtype), c.d_model, c.max_seq, c.heads, c.head_dim
    head = [f"# BERT: {c.layers} layers, d_model {d}, {H} heads, ffn {c.ffn}, vocab {c.vocab}, max_seq {S}"]
    head.append("module bert")
    head += declarations(param_shapes(c), c.dtype)
    t = Text()
    e = "bert.embeddings"

    def dense(x: str, w: str) -> str:
        return t.op(f"add(%{linear(t, x, f'{w}.weight', c.dtype, 'mm')}, @{w}.bias)", "dense")

    def norm(x: str, w: str) -> str:
        return t.op(f"layernorm(%{x}, @{w}.weight, @{w}.bias) {{eps = {c.eps}}}", "ln")

    we = t.op(f"gather(@{e}.word_embeddings.weight, %ids)", "we")
    te = t.op(f"gather(@{e}.token_type_embeddings.weight, %types)", "te")
    x = t.op(f"add(%{t.op(f'add(%{we}, @{e}.position_embeddings.weight)', 'x')}, %{te})", "x")
    x = norm(x, f"{e}.LayerNorm")
    for i in range(c.layers):
        p = f"bert.encoder.layer.{i}"
        heads = []
        for name in ("query", "key", "value"):
            y = dense(x, f"{p}.attention.self.{name}")
            heads.append(t.op(f"reshape(%{y}) : {ty(dt, S, H, dh)}", name[0]))
        qh = t.op(f"transpose(%{heads[0]}) {{perm = [1, 0, 2]}}", "qh")
        kt = t.op(f"transpose(%{heads[1]}) {{perm = [1, 2, 0]}}", "kt")
        vh = t.op(f"transpose(%{heads[2]}) {{perm = [1, 0, 2]}}", "vh")
        scale = t.op(f"constant() {{value = {1 / math.sqrt(dh)!r}}} : {dt}[]", "scale")
        s = t.op(f"mul(%{t.op(f'matmul(%{qh}, %{kt})', 's')}, %{scale})", "s")
        o = t.op(f"matmul(%{t.op(f'softmax(%{s}) {{axis = -1}}', 'p')}, %{vh})", "o")
        o = t.op(f"reshape(%{t.op(f'transpose(%{o}) {{perm = [1, 0, 2]}}', 'o')}) : {ty(dt, S, d)}", "o")
        a = dense(o, f"{p}.attention.output.dense")
        x = norm(t.op(f"add(%{x}, %{a})", "x"), f"{p}.attention.output.LayerNorm")
        g = t.op(f'gelu(%{dense(x, f"{p}.intermediate.dense")}) {{approximate = "none"}}', "g")
        x = norm(t.op(f"add(%{x}, %{dense(g, f'{p}.output.dense')})", "x"), f"{p}.output.LayerNorm")
    results = [(x, ty(dt, S, d))]
    if c.pooling:
        results.append((t.op(f"reduce_mean(%{x}) {{axis = 0, keepdims = true}}", "pooled"), ty(dt, 1, d)))
    args = [("ids", ty("i32", S)), ("types", ty("i32", S))]
    return "\n".join(head) + "\n\n" + graph("encode", args, results, t)


def random_weights(c: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    w = Weights(np.random.default_rng(seed), c.dtype)
    out = {}
    for name, shape in param_shapes(c).items():
        if "embeddings" in name and len(shape) == 2:
            out[name] = w.embedding(*shape)
        elif name.endswith("bias"):
            out[name] = w.bias(*shape)
        elif len(shape) == 1:
            out[name] = w.gain(*shape)
        else:
            out[name] = w.matrix(*shape)
    return quantize(out, c.dtype)


def hidden(c: BertConfig, w: dict[str, np.ndarray], ids: list[int], types: list[int]) -> list[np.ndarray]:
    """A direct numpy forward pass: the last hidden state [len(ids), d] (and the mean pooling)."""
    num = Num(c.dtype)
    n, d, H, dh = len(ids), c.d_model, c.heads, c.head_dim
    f = {k: np.asarray(v, np.float64) for k, v in w.items()}
    e = "bert.embeddings"

    def dense(x, p):
        return num.add(lin(num, f, x, f"{p}.weight"), f[f"{p}.bias"])

    def norm(x, p):
        return num.layernorm(x, f[f"{p}.weight"], f[f"{p}.bias"], c.eps)

    x = num.add(num.add(f[f"{e}.word_embeddings.weight"][ids], f[f"{e}.position_embeddings.weight"][:n]),
                f[f"{e}.token_type_embeddings.weight"][types])  # fmt: skip
    x = norm(x, f"{e}.LayerNorm")
    for i in range(c.layers):
        p = f"bert.encoder.layer.{i}"
        q, k, v = (
            dense(x, f"{p}.attention.self.{s}").reshape(n, H, dh).transpose(1, 0, 2)
            for s in ("query", "key", "value")
        )
        s = num.mul(num.matmul(q, k.transpose(0, 2, 1)), num.r(1 / math.sqrt(dh)))
        o = num.matmul(num.softmax(s), v).transpose(1, 0, 2).reshape(n, d)
        x = norm(num.add(x, dense(o, f"{p}.attention.output.dense")), f"{p}.attention.output.LayerNorm")
        g = num.gelu_erf(dense(x, f"{p}.intermediate.dense"))
        x = norm(num.add(x, dense(g, f"{p}.output.dense")), f"{p}.output.LayerNorm")
    out = [x]
    if c.pooling:
        out.append(num.r(x.mean(0, keepdims=True)))
    return out

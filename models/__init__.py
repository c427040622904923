"""Transformer builders and checkpoint importers that emit IR text and weights.

One family per file, each with a nanoGPT-style config dataclass, `module_text(config)` (the
`.lpu` module), `param_shapes(config)`, `random_weights(config, seed)` and `logits(config,
weights, ids)`, a direct numpy forward pass that rounds where the IR rounds:

    gpt2   GPT-2: learned positions, layernorm, tanh-GELU MLP, tied embeddings
    llama  Llama: RMSNorm, RoPE, SwiGLU, grouped-query attention
    bert   BERT encoder: post-layernorm, erf-GELU, token types, optional mean pooling

Decoders have the entry points `prefill` and `decode` and keep their KV cache in SRAM state;
BERT has `encode`.
"""

from __future__ import annotations

from models import bert, gpt2, llama

FAMILIES = {
    "gpt2": (gpt2, gpt2.GPT2Config),
    "llama": (llama, llama.LlamaConfig),
    "bert": (bert, bert.BertConfig),
}

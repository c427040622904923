"""Checkpoint import: tests write their own small Hugging Face-style checkpoints (nothing is
downloaded), import them, compile, emulate, and compare with a direct numpy forward pass."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from compiler import parse
from compiler.backend import compile_module
from emulator.run import Emulator
from isa.diagnostics import LpuError
from isa.system import named_system
from lpu.api import generate_on_emulator
from lpu.cli import main
from models import FAMILIES
from models.bert import BertConfig
from models.checkpoint import export_checkpoint, import_checkpoint, read_safetensors, write_safetensors
from models.common import greedy
from models.gpt2 import GPT2Config
from models.llama import LlamaConfig

CONFIGS = {
    "gpt2": GPT2Config(layers=2, d_model=32, heads=4, ffn=64, vocab=64, max_seq=8),
    "llama": LlamaConfig(layers=2, d_model=32, heads=4, kv_heads=2, ffn=48, vocab=64, max_seq=8),
    "bert": BertConfig(layers=1, d_model=32, heads=2, ffn=64, vocab=50, max_seq=8),
}


def test_safetensors_round_trip_and_bf16(tmp_path):
    x = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int32),
         "c": np.ones((2, 2), np.float16)}  # fmt: skip
    path = str(tmp_path / "t.safetensors")
    write_safetensors(path, x)
    back = read_safetensors(path)
    for k in x:
        np.testing.assert_array_equal(back[k], x[k])
    # bf16 by hand: 1.0 is 0x3f80, -2.0 is 0xc000
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    raw = len(header).to_bytes(8, "little") + header + bytes([0x80, 0x3F, 0x00, 0xC0])
    (tmp_path / "b.safetensors").write_bytes(raw)
    np.testing.assert_array_equal(read_safetensors(str(tmp_path / "b.safetensors"))["w"], [1.0, -2.0])


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("shards", [1, 3])
def test_export_then_import_gives_back_the_weights(tmp_path, family, shards):
    module, _ = FAMILIES[family]
    c = CONFIGS[family]
    w = module.random_weights(c, 2)
    export_checkpoint(str(tmp_path), family, c, w, shards=shards)
    got_family, got_c, text, got = import_checkpoint(str(tmp_path))
    assert got_family == family and got_c == c and text == module.module_text(c)
    assert sorted(got) == sorted(w)
    for k in w:
        np.testing.assert_array_equal(got[k], w[k])


def _llama_hf_logits(hf: dict, c: LlamaConfig, ids: list[int]) -> np.ndarray:
    """Llama as Hugging Face computes it, written against the checkpoint's own layout (nn.Linear:
    y = x W^T, repeat_kv, rotate_half), in float64: independent of our importer and builder."""
    f = {k: np.asarray(v, np.float64) for k, v in hf.items()}
    n, H, G, dh = len(ids), c.heads, c.kv_heads, c.d_model // c.heads

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + c.eps) * g

    inv = 1.0 / (c.rope_theta ** (np.arange(0, dh, 2) / dh))
    ang = np.arange(n)[:, None] * inv
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

    def rope(x):  # [heads, n, dh]
        rot = np.concatenate([-x[..., dh // 2 :], x[..., : dh // 2]], -1)
        return x * cos + rot * sin

    x = f["model.embed_tokens.weight"][ids]
    for i in range(c.layers):
        p = f"model.layers.{i}"
        h = rms(x, f[f"{p}.input_layernorm.weight"])
        q = rope((h @ f[f"{p}.self_attn.q_proj.weight"].T).reshape(n, H, dh).transpose(1, 0, 2))
        k = rope((h @ f[f"{p}.self_attn.k_proj.weight"].T).reshape(n, G, dh).transpose(1, 0, 2))
        v = (h @ f[f"{p}.self_attn.v_proj.weight"].T).reshape(n, G, dh).transpose(1, 0, 2)
        k, v = np.repeat(k, H // G, 0), np.repeat(v, H // G, 0)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh) + np.triu(np.full((n, n), -np.inf), 1)
        a = np.exp(s - s.max(-1, keepdims=True))
        o = (a / a.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(n, H * dh)
        x = x + o @ f[f"{p}.self_attn.o_proj.weight"].T
        h = rms(x, f[f"{p}.post_attention_layernorm.weight"])
        g = h @ f[f"{p}.mlp.gate_proj.weight"].T
        x = (
            x
            + ((g / (1 + np.exp(-g))) * (h @ f[f"{p}.mlp.up_proj.weight"].T))
            @ f[f"{p}.mlp.down_proj.weight"].T
        )
    return rms(x, f["model.norm.weight"]) @ f["lm_head.weight"].T


def test_imported_llama_on_a_node_matches_the_checkpoint_computed_directly(tmp_path):
    c = CONFIGS["llama"]
    rng = np.random.default_rng(5)
    d, dh = c.d_model, c.d_model // c.heads
    hf = {"model.embed_tokens.weight": rng.standard_normal((c.vocab, d)), "model.norm.weight": 1 + 0.1 * rng.standard_normal(d),
          "lm_head.weight": rng.standard_normal((c.vocab, d)) / math.sqrt(d)}  # fmt: skip
    for i in range(c.layers):
        p = f"model.layers.{i}"
        for name, shape in [("self_attn.q_proj", (c.heads * dh, d)), ("self_attn.k_proj", (c.kv_heads * dh, d)),
                            ("self_attn.v_proj", (c.kv_heads * dh, d)), ("self_attn.o_proj", (d, c.heads * dh)),
                            ("mlp.gate_proj", (c.ffn, d)), ("mlp.up_proj", (c.ffn, d)), ("mlp.down_proj", (d, c.ffn))]:  # fmt: skip
            hf[f"{p}.{name}.weight"] = rng.standard_normal(shape) / math.sqrt(shape[1])
        hf[f"{p}.input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)
        hf[f"{p}.post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)
    hf = {k: v.astype(np.float16) for k, v in hf.items()}  # a float16 checkpoint, as released models are
    cfg = {"model_type": "llama", "num_hidden_layers": c.layers, "hidden_size": d, "num_attention_heads": c.heads,
           "num_key_value_heads": c.kv_heads, "intermediate_size": c.ffn, "vocab_size": c.vocab,
           "max_position_embeddings": 4096, "rms_norm_eps": c.eps}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    write_safetensors(str(tmp_path / "model.safetensors"), hf)
    family, config, text, w = import_checkpoint(str(tmp_path), "f16", max_seq=8)
    assert family == "llama" and config.max_seq == 8
    program = compile_module(parse(text), named_system("node"), w, tp=2, pp=2)
    for prompt in ([3], [1, 2, 3, 4]):
        tokens = 8 - len(prompt) + 1
        g = generate_on_emulator(program, prompt, tokens)
        assert g.violations == []
        assert g.ids == greedy(lambda ids: _llama_hf_logits(hf, c, ids), prompt, tokens)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_imported_checkpoint_compiles_and_matches_numpy(tmp_path, family):
    module, _ = FAMILIES[family]
    c = CONFIGS[family]
    w = module.random_weights(c, 4)
    export_checkpoint(str(tmp_path), family, c, w)
    _, config, text, got = import_checkpoint(str(tmp_path))
    program = compile_module(parse(text), named_system("node"), got, tp=2, pp=1)
    if family == "gpt2":
        g = generate_on_emulator(program, [5, 6], 4)
        assert g.violations == [] and g.ids == greedy(lambda ids: module.logits(c, w, ids), [5, 6], 4)
    else:
        ids = np.arange(8, dtype=np.int32) * 3
        types = np.zeros(8, np.int32)
        run = Emulator(program).run("encode", {"ids": ids, "types": types})
        assert run.violations == []
        want = module.hidden(c, w, ids.tolist(), types.tolist())[0]
        np.testing.assert_allclose(run.outputs[0].astype(np.float64), want, rtol=4e-3, atol=4e-3)


def test_import_errors_name_what_is_missing(tmp_path, capsys):
    c = CONFIGS["gpt2"]
    w = FAMILIES["gpt2"][0].random_weights(c, 0)
    export_checkpoint(str(tmp_path), "gpt2", c, w)
    tensors = read_safetensors(str(tmp_path / "model.safetensors"))
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    write_safetensors(str(tmp_path / "model.safetensors"), tensors)
    with pytest.raises(LpuError, match="the checkpoint lacks transformer.h.1.mlp.c_fc.bias"):
        import_checkpoint(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"model_type": "mamba"}))
    with pytest.raises(LpuError, match="model_type 'mamba' is not supported"):
        import_checkpoint(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\x10")
    rc = main(["import", str(tmp_path), "-o", str(tmp_path / "m.lpu"), "-w", str(tmp_path / "w.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "model_type 'mamba'" in err and not os.path.exists(tmp_path / "m.lpu")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rc = main(["import", str(tmp_path), "-o", str(tmp_path / "m.lpu"), "-w", str(tmp_path / "w.npz")])
    assert rc == 1 and "not a safetensors file" in capsys.readouterr().err


def test_import_as_int8_quantizes_the_matrices(tmp_path):
    c = CONFIGS["llama"]
    w = FAMILIES["llama"][0].random_weights(c, 3)
    export_checkpoint(str(tmp_path), "llama", c, w)
    _, c8, text, got = import_checkpoint(str(tmp_path), "i8")
    assert c8.dtype == "i8" and "param @model.layers.0.mlp.up_proj.weight : i8[32, 48]" in text
    q, scale = got["model.layers.0.mlp.up_proj.weight"], got["model.layers.0.mlp.up_proj.weight.scale"]
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    back = q.astype(np.float64) * scale.astype(np.float64)
    np.testing.assert_allclose(
        back, w["model.layers.0.mlp.up_proj.weight"].astype(np.float64), atol=float(scale.max())
    )
    program = compile_module(parse(text), named_system("tsp"), got)
    g = generate_on_emulator(program, [1, 2], 3)
    assert g.violations == [] and g.ids == greedy(
        lambda ids: FAMILIES["llama"][0].logits(c8, got, ids), [1, 2], 3
    )


def test_import_from_the_command_line(tmp_path, capsys):
    c = CONFIGS["bert"]
    export_checkpoint(str(tmp_path / "ck"), "bert", c, FAMILIES["bert"][0].random_weights(c, 0), shards=2)
    mod, w = str(tmp_path / "b.lpu"), str(tmp_path / "b.npz")
    assert main(["import", str(tmp_path / "ck"), "-o", mod, "-w", w, "--dtype", "bf16"]) == 0
    assert "bert" in capsys.readouterr().out
    assert "bf16[50, 32]" in open(mod).read()


def test_a_config_with_wrong_values_is_refused(tmp_path):
    c = CONFIGS["gpt2"]
    export_checkpoint(str(tmp_path), "gpt2", c, FAMILIES["gpt2"][0].random_weights(c, 0))
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key, value, message in [("n_layer", "two", "layers must be an integer, got 'two'"),
                                ("n_head", 5, "--d-model 32 must be a multiple of --heads 5"),
                                ("n_embd", None, "config.json lacks n_embd")]:  # fmt: skip
        (tmp_path / "config.json").write_text(json.dumps(cfg | {key: value}))
        with pytest.raises(LpuError, match=message):
            import_checkpoint(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(LpuError, match="must hold a JSON object"):
        import_checkpoint(str(tmp_path))

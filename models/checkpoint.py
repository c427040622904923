"""Hugging Face-style checkpoints: `config.json` + `model.safetensors` (or shards listed in
`model.safetensors.index.json`), for the GPT-2, Llama and BERT families.

The safetensors format is read here directly (8-byte header length, a JSON header of
name -> dtype, shape, data offsets, then raw little-endian data): nothing is unpickled and no
extra dependency is needed. `nn.Linear` weights ([out, in]) are transposed into our [in, out]
layout; GPT-2's Conv1D weights already are [in, out]; tied LM heads are filled from the
embedding; Llama's rotary tables are computed from `rope_theta`.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from isa.diagnostics import error
from isa.files import read_bytes, write_atomically
from models.common import act_dtype, quantize, storage

_DT = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    data = read_bytes(path, "safetensors file")
    if len(data) < 8:
        raise error("not a safetensors file: shorter than its 8-byte header length", filename=path)
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise error(
            f"not a safetensors file: its header claims {n} bytes, the file has {len(data) - 8}",
            filename=path,
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"not a safetensors file: the header is not JSON ({e})", filename=path) from None
    body = memoryview(data)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise error(
                f"tensor '{name}': a header entry needs dtype, shape and data_offsets", filename=path
            ) from None
        if dtype not in _DT and dtype != "BF16":
            raise error(f"tensor '{name}' has dtype {dtype}, which this reader does not know", filename=path)
        width = 2 if dtype == "BF16" else np.dtype(_DT[dtype]).itemsize
        if not (0 <= a <= b <= len(body)) or b - a != width * int(np.prod(shape)):
            raise error(
                f"tensor '{name}': data offsets {a}..{b} do not fit {dtype}{list(shape)}", filename=path
            )
        raw = np.frombuffer(body[a:b], dtype="<u2" if dtype == "BF16" else _DT[dtype])
        if dtype == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.reshape(shape).copy()
    return out


def write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    """Write tensors (float32, float16, int) as a safetensors file (for tests and exports)."""
    names = {np.dtype(v): k for k, v in _DT.items()}
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        x = np.ascontiguousarray(tensors[name])
        kind = names[x.dtype.newbyteorder("<") if x.dtype.byteorder == ">" else x.dtype]
        raw = x.astype(_DT[kind]).tobytes()
        header[name] = {"dtype": kind, "shape": list(x.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, sort_keys=True).encode()
    head += b" " * (-len(head) % 8)

    def write(f):
        f.write(struct.pack("<Q", len(head)) + head)
        for b in blobs:
            f.write(b)

    write_atomically(path, write)


def read_config(directory: str) -> dict:
    cfg_path = os.path.join(directory, "config.json")
    if not os.path.isdir(directory):
        raise error(f"{directory} is not a directory (expected config.json and model.safetensors in it)")
    try:
        config = json.loads(read_bytes(cfg_path, "config"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"config.json is not JSON: {e}", filename=cfg_path) from None
    if not isinstance(config, dict):
        raise error("config.json must hold a JSON object", filename=cfg_path)
    return config


def read_checkpoint(directory: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json, every tensor) of a checkpoint directory, shards included."""
    return read_config(directory), read_tensors(directory)


def read_tensors(directory: str) -> dict[str, np.ndarray]:
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    tensors: dict[str, np.ndarray] = {}
    if os.path.exists(index):
        try:
            weight_map = json.loads(read_bytes(index, "index"))["weight_map"]
        except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError):
            raise error("the index must be JSON with a weight_map", filename=index) from None
        for shard in sorted(set(weight_map.values())):
            got = read_safetensors(os.path.join(directory, shard))
            tensors |= {k: v for k, v in got.items() if weight_map.get(k) == shard}
        missing = sorted(k for k in weight_map if k not in tensors)
        if missing:
            raise error(
                f"the index lists {missing[0]} in {weight_map[missing[0]]}, which does not hold it",
                filename=index,
            )
    elif os.path.exists(single):
        tensors = read_safetensors(single)
    else:
        raise error(f"no model.safetensors (or model.safetensors.index.json) in {directory}")
    return tensors


def _get(cfg: dict, keys: tuple[str, ...], default=None, path: str = "config.json"):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    if default is None:
        raise error(f"config.json lacks {keys[0]}", filename=path)
    return default


def config_of(cfg: dict, dtype: str, max_seq: int | None, directory: str = "."):
    """(family, our config) from a Hugging Face config.json."""
    from models.bert import BertConfig
    from models.gpt2 import GPT2Config
    from models.llama import LlamaConfig

    path = os.path.join(directory, "config.json")
    kind = cfg.get("model_type")
    if kind == "gpt2":
        d = _get(cfg, ("n_embd",), path=path)
        return "gpt2", GPT2Config(
            layers=_get(cfg, ("n_layer",), path=path),
            d_model=d,
            heads=_get(cfg, ("n_head",), path=path),
            ffn=_get(cfg, ("n_inner",), 4 * d),
            vocab=_get(cfg, ("vocab_size",), path=path),
            max_seq=max_seq or _get(cfg, ("n_positions", "n_ctx"), path=path),
            dtype=dtype,
            eps=_get(cfg, ("layer_norm_epsilon",), 1e-5),
        )
    if kind == "llama":
        heads = _get(cfg, ("num_attention_heads",), path=path)
        return "llama", LlamaConfig(
            layers=_get(cfg, ("num_hidden_layers",), path=path),
            d_model=_get(cfg, ("hidden_size",), path=path),
            heads=heads,
            kv_heads=_get(cfg, ("num_key_value_heads",), heads),
            ffn=_get(cfg, ("intermediate_size",), path=path),
            vocab=_get(cfg, ("vocab_size",), path=path),
            max_seq=max_seq or _get(cfg, ("max_position_embeddings",), path=path),
            dtype=dtype,
            eps=_get(cfg, ("rms_norm_eps",), 1e-6),
            rope_theta=float(_get(cfg, ("rope_theta",), 10000.0)),
        )
    if kind == "bert":
        return "bert", BertConfig(
            layers=_get(cfg, ("num_hidden_layers",), path=path),
            d_model=_get(cfg, ("hidden_size",), path=path),
            heads=_get(cfg, ("num_attention_heads",), path=path),
            ffn=_get(cfg, ("intermediate_size",), path=path),
            vocab=_get(cfg, ("vocab_size",), path=path),
            max_seq=max_seq or _get(cfg, ("max_position_embeddings",), path=path),
            dtype=dtype,
            eps=_get(cfg, ("layer_norm_eps",), 1e-12),
            type_vocab=_get(cfg, ("type_vocab_size",), 2),
        )
    raise error(f"model_type {kind!r} is not supported (supported: gpt2, llama, bert)", filename=path)


def _hf_name(family: str, ours: str) -> tuple[str, bool]:
    """The checkpoint name of one of our params, and whether it is an nn.Linear weight (transposed)."""
    if family == "llama":
        linear = ours.endswith("_proj.weight")
        return ours, linear
    if family == "bert":
        linear = ours.endswith(".weight") and (".self." in ours or ".dense." in ours)
        return ours, linear
    return ours, False  # GPT-2: Conv1D weights are [in, out] already


def _lookup(tensors: dict, family: str, name: str):
    """A checkpoint tensor by name, allowing the prefix-less names of base models (`h.0...`,
    `embeddings...`) and old LayerNorm names (gamma, beta)."""
    candidates = [name]
    for prefix in ("transformer.", "bert."):
        if name.startswith(prefix):
            candidates.append(name[len(prefix) :])
    more = []
    for c in candidates:
        if c.endswith("LayerNorm.weight"):
            more.append(c[: -len("weight")] + "gamma")
        if c.endswith("LayerNorm.bias"):
            more.append(c[: -len("bias")] + "beta")
    for c in candidates + more:
        if c in tensors:
            return tensors[c]
    return None


def import_checkpoint(directory: str, dtype: str = "f16", max_seq: int | None = None):
    """(family, config, module text, weights) of a checkpoint directory, cast to `dtype`."""
    from models import FAMILIES

    family, config = config_of(read_config(directory), dtype, max_seq, directory)
    tensors = read_tensors(directory)
    module = FAMILIES[family][0]
    text = module.module_text(config)
    shapes = module.param_shapes(config)
    weights, missing = {}, []
    for name, shape in shapes.items():
        if name.startswith("rope."):
            continue
        if name == "lm_head.weight":
            x = _lookup(tensors, family, name)
            if x is not None and family == "llama":
                x = x.T  # nn.Linear
            elif x is not None and family == "gpt2":
                x = x.T  # GPT2LMHeadModel's head is an nn.Linear [vocab, d]
            else:
                embed = "transformer.wte.weight" if family == "gpt2" else "model.embed_tokens.weight"
                e = _lookup(tensors, family, embed)
                if e is None:
                    missing.append(name)
                    continue
                x = e.T  # tied to the embedding
        else:
            hf, linear = _hf_name(family, name)
            x = _lookup(tensors, family, hf)
            if x is None:
                missing.append(hf)
                continue
            x = x.T if linear else x
        if name == "transformer.wpe.weight" or name == "bert.embeddings.position_embeddings.weight":
            x = x[: shape[0]]  # positions past --max-seq are not needed
        if tuple(x.shape) != shape:
            raise error(
                f"tensor {name} has shape {list(x.shape)}; config.json implies {list(shape)}",
                filename=directory,
            )
        weights[name] = storage(np.asarray(x, np.float64), act_dtype(dtype))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise error(
            f"the checkpoint lacks {missing[0]}{more} (a {family} model with {config.layers} layers)",
            filename=directory,
        )
    if family == "llama":
        from models.llama import rope_tables

        weights["rope.cos"], weights["rope.sin"] = rope_tables(config)
    return family, config, text, quantize(weights, dtype)


def export_checkpoint(
    directory: str, family: str, config, weights: dict[str, np.ndarray], shards: int = 1
) -> None:
    """Write our weights as a Hugging Face-style checkpoint (for tests and round trips)."""
    os.makedirs(directory, exist_ok=True)
    if any(name.endswith(".scale") for name in weights):
        raise error("exporting an int8 model is not supported: export the float weights")
    hf: dict[str, np.ndarray] = {}
    for name, x in weights.items():
        if name.startswith("rope.") or (name == "lm_head.weight" and family == "gpt2"):
            continue  # derived, or tied
        target, linear = _hf_name(family, name)
        x = np.asarray(x, np.float32)
        hf[target] = np.ascontiguousarray(x.T if (linear or name == "lm_head.weight") else x)
    cfg = _hf_config(family, config)
    write_atomically(
        os.path.join(directory, "config.json"), lambda f: f.write(json.dumps(cfg, indent=1).encode())
    )
    names = sorted(hf)
    if shards == 1:
        write_safetensors(os.path.join(directory, "model.safetensors"), hf)
        return
    weight_map = {}
    for k in range(shards):
        part = names[k::shards]
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(directory, file), {n: hf[n] for n in part})
        weight_map |= {n: file for n in part}
    index = {"metadata": {}, "weight_map": weight_map}
    path = os.path.join(directory, "model.safetensors.index.json")
    write_atomically(path, lambda f: f.write(json.dumps(index, indent=1).encode()))


def _hf_config(family: str, c) -> dict:
    if family == "gpt2":
        return {
            "model_type": "gpt2",
            "n_layer": c.layers,
            "n_embd": c.d_model,
            "n_head": c.heads,
            "n_inner": c.ffn,
            "vocab_size": c.vocab,
            "n_positions": c.max_seq,
            "layer_norm_epsilon": c.eps,
        }
    if family == "llama":
        return {
            "model_type": "llama",
            "num_hidden_layers": c.layers,
            "hidden_size": c.d_model,
            "num_attention_heads": c.heads,
            "num_key_value_heads": c.kv_heads,
            "intermediate_size": c.ffn,
            "vocab_size": c.vocab,
            "max_position_embeddings": c.max_seq,
            "rms_norm_eps": c.eps,
            "rope_theta": c.rope_theta,
        }
    return {
        "model_type": "bert",
        "num_hidden_layers": c.layers,
        "hidden_size": c.d_model,
        "num_attention_heads": c.heads,
        "intermediate_size": c.ffn,
        "vocab_size": c.vocab,
        "max_position_embeddings": c.max_seq,
        "layer_norm_eps": c.eps,
        "type_vocab_size": c.type_vocab,
    }

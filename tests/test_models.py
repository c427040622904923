"""Transformer builders: the IR module, a direct numpy forward pass and the emulator agree."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler import parse
from compiler.backend import compile_module
from compiler.reference import Reference
from emulator.run import Emulator
from isa.diagnostics import LpuError
from isa.system import SystemConfig, named_system
from lpu.api import generate_on_emulator, generate_on_reference
from lpu.cli import main
from models import FAMILIES
from models.bert import BertConfig
from models.common import greedy
from models.gpt2 import GPT2Config
from models.llama import LlamaConfig

SMALL = {
    "gpt2": GPT2Config(layers=2, d_model=32, heads=4, ffn=64, vocab=64, max_seq=8),
    "llama": LlamaConfig(layers=2, d_model=32, heads=4, kv_heads=2, ffn=64, vocab=64, max_seq=8),
}


def build(family, config, seed=0):
    module, _ = FAMILIES[family]
    return parse(module.module_text(config), f"{family}.lpu"), module.random_weights(config, seed), module


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_numpy_forward_and_reference_interpreter_agree(family):
    m, w, module = build(family, SMALL[family])
    c = SMALL[family]
    for prompt in ([5], [3, 7, 1], list(range(1, 8))):
        want = greedy(lambda ids: module.logits(c, w, ids), prompt, c.max_seq - len(prompt) + 1)
        ref = Reference(m, w)
        ids = np.zeros(c.max_seq, np.int32)
        ids[: len(prompt)] = prompt
        logits = ref.run("prefill", {"ids": ids, "len": np.int32(len(prompt))})[0]
        np.testing.assert_allclose(
            logits[0].astype(np.float64), module.logits(c, w, prompt)[-1], rtol=1e-2, atol=1e-2
        )
        got = [int(np.argmax(logits[0]))]
        for k in range(len(want) - 1):
            out = ref.run("decode", {"tok": np.array([got[-1]], np.int32), "pos": np.int32(len(prompt) + k)})
            got.append(int(np.argmax(out[0][0])))
        assert got == want, (prompt, got, want)


@pytest.mark.parametrize(
    "family, system, tp, pp",
    [("gpt2", "tsp", 1, 1), ("gpt2", "node", 2, 2), ("llama", "tsp", 1, 1), ("llama", "node", 4, 1),
     ("llama", "node", 2, 2)],
)  # fmt: skip
def test_emulated_decode_equals_numpy_greedy(family, system, tp, pp):
    m, w, module = build(family, SMALL[family])
    c = SMALL[family]
    program = compile_module(m, named_system(system), w, tp=tp, pp=pp)
    for prompt in ([5], [3, 7, 1], [2, 4, 6, 8, 10]):
        tokens = c.max_seq - len(prompt) + 1
        g = generate_on_emulator(program, prompt, tokens)
        assert g.violations == []
        assert g.ids == greedy(lambda ids: module.logits(c, w, ids), prompt, tokens)
        assert g.ids == generate_on_reference(program, prompt, tokens)
        assert len(set(g.decode_cycles)) == 1  # one program, the same schedule every step


@pytest.mark.parametrize("system, tp, pp", [("tsp", 1, 1), ("node", 2, 2)])
def test_bert_encoder_equals_numpy(system, tp, pp):
    c = BertConfig(layers=2, d_model=32, heads=4, ffn=64, vocab=64, max_seq=8, pooling=True)
    m, w, module = build("bert", c)
    program = compile_module(m, named_system(system), w, tp=tp, pp=pp)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, c.vocab, c.max_seq).astype(np.int32)
    types = (np.arange(c.max_seq) >= 4).astype(np.int32)
    run = Emulator(program).run("encode", {"ids": ids, "types": types})
    assert run.violations == []
    for got, want in zip(run.outputs, module.hidden(c, w, ids.tolist(), types.tolist())):
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=4e-3, atol=4e-3)


@pytest.mark.parametrize("family, tp, pp", [("gpt2", 1, 1), ("llama", 2, 2), ("llama", 4, 1)])
def test_int8_weights_decode_like_numpy_and_use_less_sram(family, tp, pp):
    module, config_class = FAMILIES[family]
    c8 = dataclasses.replace(SMALL[family], dtype="i8")
    m8, w8, _ = build(family, c8)
    assert w8["lm_head.weight"].dtype == np.int8 and w8["lm_head.weight.scale"].dtype == np.float16
    p8 = compile_module(m8, named_system("node"), w8, tp=tp, pp=pp)
    for prompt in ([5], [3, 7, 1]):
        tokens = c8.max_seq - len(prompt) + 1
        g = generate_on_emulator(p8, prompt, tokens)
        assert g.violations == []
        assert g.ids == greedy(lambda ids: module.logits(c8, w8, ids), prompt, tokens)
    m16, w16, _ = build(family, SMALL[family])
    p16 = compile_module(m16, named_system("node"), w16, tp=tp, pp=pp)
    params = {pl.name: pl for pl in p8.placements if pl.role == "param"}
    assert params["lm_head.weight"].dtype == "i8"
    def param_bytes(p):
        return sum(pl.words(p.system.chip.lanes) for pl in p.placements if pl.role == "param")

    assert param_bytes(p8) < param_bytes(p16)


def test_a_chip_mostly_held_by_weights_still_places_what_both_entries_need():
    """int8 weights pack the slices of a small chip in order; the constants and temporaries of prefill
    and decode go where a quarter of a slice is free, else where they fit at all (not round robin
    into a full slice, which the allocator finds only after scheduling: this config overflowed one
    slice by 10 KB so)."""
    c = LlamaConfig(layers=2, d_model=128, heads=4, kv_heads=2, ffn=128, vocab=128, max_seq=8, dtype="i8")
    m, w, module = build("llama", c)
    chip = named_system("tiny").chip.replace(mem_slices_per_hemisphere=4)
    program = compile_module(m, SystemConfig("tight", chip), w)
    assert program.meta["sram_bytes_max_per_chip"] > chip.sram_bytes // 2
    prompt, tokens = [3, 7, 1], 4
    g = generate_on_emulator(program, prompt, tokens)
    assert g.violations == []
    assert g.ids == greedy(lambda ids: module.logits(c, w, ids), prompt, tokens)


def test_prefill_and_decode_share_their_stages():
    """Prefill and decode are cut into pipeline stages once (decode's cuts; prefill's ops follow the
    weights they read): a weight lives on one stage, not on two where the entries' cuts would
    differ (these cuts did: 24 params of 5 layers on two stages each), and decode still equals
    numpy."""
    from compiler.decompose import decompose
    from compiler.partition import partition

    c = GPT2Config(layers=5, d_model=64, heads=4, ffn=256, vocab=128, max_seq=32)
    m, w, module = build("gpt2", c)
    plan = partition(decompose(m), named_system("node"), 2, 3)
    stage_of = {chip: s for s, group in enumerate(plan.groups) for chip in group}
    homes: dict[str, set[int]] = {}
    for chip, _, name, _ in plan.params:
        homes.setdefault(name, set()).add(stage_of[chip])
    assert len(homes) == len(m.params) and all(len(s) == 1 for s in homes.values())
    assert {s for h in homes.values() for s in h} == {0, 1, 2}
    program = compile_module(m, named_system("node"), w, tp=2, pp=3)
    prompt, tokens = [3, 7, 1], 3
    g = generate_on_emulator(program, prompt, tokens)
    assert g.violations == []
    assert g.ids == greedy(lambda ids: module.logits(c, w, ids), prompt, tokens)


def test_param_names_follow_hugging_face():
    gpt = FAMILIES["gpt2"][0].param_shapes(SMALL["gpt2"])
    assert "transformer.h.1.attn.c_attn.weight" in gpt and gpt["transformer.wte.weight"] == (64, 32)
    llama = FAMILIES["llama"][0].param_shapes(SMALL["llama"])
    assert llama["model.layers.0.self_attn.k_proj.weight"] == (32, 16)  # [in, out]: 2 kv heads of 8
    bert = FAMILIES["bert"][0].param_shapes(BertConfig())
    assert "bert.encoder.layer.1.attention.output.LayerNorm.bias" in bert


def cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_model_compile_generate_from_the_command_line(capsys, tmp_path):
    mod, w, prog = (str(tmp_path / n) for n in ("l.lpu", "l.npz", "l.lpuprog"))
    rc, out, err = cli(capsys, "model", "llama", "-o", mod, "-w", w, "--layers", "1", "--d-model", "32",
                       "--heads", "4", "--kv-heads", "1", "--vocab", "48", "--max-seq", "8")  # fmt: skip
    assert rc == 0, err
    assert cli(capsys, "compile", mod, "--system", "node", "--tp", "2", "-w", w, "-o", prog)[0] == 0
    rc, out, err = cli(capsys, "generate", prog, "--prompt-ids", "1,2,3", "--tokens", "4", "--check")
    assert rc == 0, err
    assert "generated: " in out and "tokens/s" in out and "check: the ids equal" in out
    rc, out, err = cli(capsys, "generate", prog, "--prompt-ids", "1,2,3", "--tokens", "7")
    assert rc == 1 and "need 9 positions; the model was built for --max-seq 8" in err
    rc, out, err = cli(capsys, "generate", prog, "--prompt-ids", "1,99")
    assert rc == 1 and "99 is not a token id of this model (0..47)" in err
    rc, out, err = cli(capsys, "generate", prog, "--prompt-ids", "1,x")
    assert rc == 1 and "expected comma-separated integers" in err


@pytest.mark.parametrize("argv, message", [
    (["gpt2", "--d-model", "30", "--heads", "4"], "--d-model 30 must be a multiple of --heads 4"),
    (["llama", "--heads", "4", "--kv-heads", "3"], "--heads 4 must be a multiple of --kv-heads 3"),
    (["gpt2", "--kv-heads", "2"], "--kv-heads: gpt2 has no grouped-query attention"),
    (["gpt2", "--layers", "0"], "--layers must be at least 1, got 0"),
])  # fmt: skip
def test_bad_model_sizes_are_refused(capsys, tmp_path, argv, message):
    rc, out, err = cli(capsys, "model", *argv, "-o", str(tmp_path / "m.lpu"))
    assert rc == 1 and message in err, err
    assert not (tmp_path / "m.lpu").exists()


def test_generate_needs_a_decoder(capsys, tmp_path):
    mod, prog = str(tmp_path / "b.lpu"), str(tmp_path / "b.lpuprog")
    assert cli(capsys, "model", "bert", "-o", mod, "--d-model", "32", "--max-seq", "8")[0] == 0
    assert cli(capsys, "compile", mod, "--system", "tsp", "--random-weights", "0", "-o", prog)[0] == 0
    rc, out, err = cli(capsys, "generate", prog, "--prompt-ids", "1")
    assert rc == 1 and "needs a decoder program with entries prefill and decode" in err
    with pytest.raises(LpuError):
        generate_on_emulator(__import__("isa.program", fromlist=["load"]).load(prog), [1], 1)


def test_random_inputs_keep_a_position_computed_from_an_input_in_range():
    """Llama's prefill picks its last row with gather(x, len - 1): seeded random inputs keep len in
    1..max_seq (they once gave negative lengths, whose gather reads past the table)."""
    from compiler import parse
    from lpu.arrays import random_inputs
    from models.llama import LlamaConfig, module_text

    m = parse(module_text(LlamaConfig(1, 64, 4, 2, 128, 128, 8)))
    lens = {int(random_inputs(m, m.graph("prefill"), seed)["len"]) for seed in range(40)}
    assert lens <= set(range(1, 9)) and len(lens) > 3
    pos = {int(random_inputs(m, m.graph("decode"), seed)["pos"]) for seed in range(40)}
    assert pos <= set(range(0, 8))

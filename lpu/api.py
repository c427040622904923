"""The Python API behind the command line: compile, run, check."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.parser import parse
from compiler.reference import Reference
from isa.diagnostics import error
from isa.numerics import FLOATS, to_storage
from isa.program import Program, from_vectors

# --check tolerances: |emulated - reference| <= atol + rtol * |reference|. The two differ only
# in the order f32 sums are taken (matrix passes, reductions) and in f32 intermediates of
# decomposed composites, which move a result by a few units in the last place of its dtype.
# (rtol, atol): |emulated - reference| <= atol + rtol * (|reference| + RMS of the reference tensor)
TOLERANCE = {"f32": (1e-4, 1e-5), "f16": (4e-3, 1e-3), "bf16": (3e-2, 1e-2)}


def schedule_length(p: Program) -> int:
    """Cycles until the last instruction of any entry has finished, from the program alone."""
    return p.length()


def weights_from_image(p: Program) -> dict[str, np.ndarray]:
    """The params a program carries in its SRAM image (shards of one param are put back together)."""
    from isa.spec import DTYPE_BYTES

    lanes = p.system.chip.lanes
    mem_index = {name: k for k, name in enumerate(p.system.chip.mem_slice_names())}
    where = {
        (int(c), int(s), int(w)): j
        for j, (c, s, w) in enumerate(zip(p.image_chip, p.image_slice, p.image_word))
    }
    pieces: dict[str, list] = {}
    for pl in p.placements:
        if pl.role != "param":
            continue
        rows = []
        for v in range(pl.vectors(lanes)):
            j = where.get((pl.chip, mem_index[pl.slice], pl.word + v * DTYPE_BYTES[pl.dtype]))
            if j is None:
                return {}
            rows.append(p.image_data[j])
        value = to_storage(from_vectors(np.array(rows), pl, lanes), pl.dtype)
        pieces.setdefault(pl.name, []).append((pl, value))
    whole_shapes = p.whole("param")
    out = {}
    for name, got in pieces.items():
        whole = [v for pl, v in got if pl.part is None]
        if whole:
            out[name] = whole[0]
            continue
        value = np.zeros(whole_shapes[name][1], got[0][1].dtype)
        for pl, v in got:  # shards may split different axes (a param used by two ops)
            value[pl.index()] = v
        out[name] = value
    return out


@dataclass
class CheckReport:
    ok: bool
    lines: list[str] = field(default_factory=list)


def check_outputs(p: Program, entry: str, inputs, outputs, weights=None) -> CheckReport:
    """Compare emulated outputs with the reference interpreter run on the program's own module."""
    text = p.meta.get("module")
    if not text:
        raise error(
            "this program carries no IR module (it was assembled by hand), so --check has "
            "nothing to compare with"
        )
    module = parse(text, "<program module>")
    if weights is None:
        weights = weights_from_image(p)
    missing = [g.name for g in module.params if g.name not in weights]
    if missing:
        raise error(
            f"--check needs the weights ({', '.join(missing)}): the program was compiled without "
            "them; give them with -w"
        )
    want = Reference(module, weights).run(entry, inputs)
    report = CheckReport(True)
    graph = module.graph(entry)
    for k, (got, ref, t) in enumerate(zip(outputs, want, graph.result_types)):
        if t.dtype in FLOATS:
            rtol, atol = TOLERANCE[t.dtype]
            g64, r64 = got.astype(np.float64), ref.astype(np.float64)
            # inf - inf is computed and then masked out: silence numpy about it
            old = np.seterr(invalid="ignore", over="ignore")
            same_special = (np.isnan(g64) == np.isnan(r64)) & (np.isinf(r64) <= (g64 == r64))
            both = np.isfinite(r64) & np.isfinite(g64)
            # relative to each value and to the tensor's scale (its RMS): a value near zero that sums
            # many products inherits the rounding of terms far larger than itself
            finite = r64[np.isfinite(r64)]
            rms = float(np.sqrt(np.mean(np.square(finite)))) if finite.size else 0.0
            close = ~both | (
                np.abs(np.where(both, g64 - r64, 0.0))
                <= atol + rtol * (np.abs(np.where(both, r64, 0.0)) + rms)
            )
            # a finite value where the reference has inf or NaN (or the reverse) is caught by same_special
            close &= ~(np.isfinite(r64) & ~np.isfinite(g64))
            bad = ~(same_special & close)
            np.seterr(**old)
            worst = float(np.abs(g64[both] - r64[both]).max(initial=0.0))
            rule = f"within {rtol:g} x (|value| + RMS {rms:.3g}) + {atol:g}"
        else:
            bad = got != ref
            worst = float(np.abs(got.astype(np.int64) - ref.astype(np.int64)).max(initial=0))
            rule = "exactly"
        if bad.any():
            report.ok = False
            idx = np.argwhere(bad)[0]
            report.lines.append(
                f"check: out{k} : {t} differs from the reference at {list(map(int, idx))}: emulated "
                f"{got[tuple(idx)]!r}, reference {ref[tuple(idx)]!r} ({int(bad.sum())} of {bad.size} "
                f"elements outside the tolerance: {rule})"
            )
        else:
            report.lines.append(
                f"check: out{k} : {t} matches the reference {rule} (largest difference {worst:.3g})"
            )
    return report


@dataclass(frozen=True)
class LinkVector:
    """One vector over a chip-to-chip link, read from the program alone."""

    send: int  # instruction row of the send
    recv: int  # instruction row of the receive that takes it (its intended source)
    link: int  # system link
    src_chip: int
    dst_chip: int
    handoff: int  # cycle the send hands it to the link
    arrival: int  # handoff + serialisation + latency
    taken: int  # cycle the receive takes it


def link_vectors(p: Program) -> list[LinkVector]:
    """Every vector a receive takes, paired with the send its intended source names."""
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    from isa.program import source_slots
    from isa.spec import BY_MNEMONIC

    send, recv = BY_MNEMONIC["send"], BY_MNEMONIC["recv"]
    slot = source_slots(recv).index("link")
    link_col = recv.operands.index("link")
    own = {}
    out = []
    for r in np.nonzero(p.opcode == recv.code)[0]:
        r = int(r)
        c = int(p.chip[r])
        if c not in own:
            own[c] = p.system.chip_links(c)
        k = int(p.fields[r, link_col])
        s = int(p.src[r, slot])
        if s < 0 or k >= len(own[c]) or int(p.opcode[s]) != send.code:
            continue
        sys_link, other = own[c][k]
        for i in range(int(p.n[r])):
            j = i * int(p.src_step[r, slot]) + int(p.src_off[r, slot])
            handoff = int(p.cycle[s]) + send.dskew + j
            arrival = handoff + p.system.link_cycles_per_vector + p.system.link_latency_cycles
            out.append(
                LinkVector(
                    s, r, sys_link, int(p.chip[s]), c, handoff, arrival, int(p.cycle[r]) + recv.dskew + i
                )
            )
    return out


def check_link_schedule(p: Program) -> list[str]:
    """From the program file alone: every receive is issued the cycle its vector arrives, every send
    is received once, over a link joining the two chips, and no link direction carries two vectors at
    once. Returns the problems found (none for a compiled program)."""
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    from isa.spec import BY_MNEMONIC

    send = BY_MNEMONIC["send"]
    problems = []
    vectors = link_vectors(p)
    recvs = int(sum(int(p.n[r]) for r in np.nonzero(p.opcode == BY_MNEMONIC["recv"].code)[0]))
    if len(vectors) != recvs:
        problems.append(f"{recvs - len(vectors)} received vectors name no send over their link")
    taken: dict[tuple[int, int], int] = {}
    for v in vectors:
        a, b = p.system.links[v.link]
        if {a, b} != {v.src_chip, v.dst_chip}:
            problems.append(f"#{v.recv} receives over link {v.link} ({a}-{b}) from chip {v.src_chip}")
        if v.taken != v.arrival:
            problems.append(f"#{v.recv} takes its vector on cycle {v.taken}, it arrives on cycle {v.arrival}")
        key = (v.send, v.handoff)
        taken[key] = taken.get(key, 0) + 1
    for s in np.nonzero(p.opcode == send.code)[0]:
        for i in range(int(p.n[s])):
            times = taken.get((int(s), int(p.cycle[s]) + send.dskew + i), 0)
            if times != 1:
                problems.append(f"vector {i} of send #{int(s)} is received {times} times")
    ser = p.system.link_cycles_per_vector
    by_direction: dict[tuple[int, int, int], list[int]] = {}  # entries run one at a time
    for v in vectors:
        by_direction.setdefault((int(p.entry[v.send]), v.link, v.src_chip), []).append(v.handoff)
    for (_, link, chip), handoffs in sorted(by_direction.items()):
        handoffs.sort()
        for a, b in zip(handoffs, handoffs[1:]):
            if b < a + ser:
                problems.append(
                    f"link {link} from chip {chip} carries two vectors at once (cycles {a} and {b})"
                )
    return problems


def link_wait_cycles(p: Program, entry: str | None = None) -> int:
    """Cycles in which some vector is on a link and no chip computes anything else: the time the
    whole system waits on links."""
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    from isa.spec import BY_CODE, Unit

    length = p.length(entry)
    if length == 0:
        return 0
    sel = np.arange(len(p)) if entry is None else np.nonzero(p.entry == p.entries.index(entry))[0]
    busy = np.zeros(length + 1, np.int64)
    for i in sel:
        spec = BY_CODE[int(p.opcode[i])]
        if spec.unit is Unit.C2C:
            continue
        n = int(p.n[i])
        busy[int(p.cycle[i])] += 1
        busy[int(p.cycle[i]) + max(spec.busy_cycles(n), spec.dfunc + n)] -= 1
    computing = np.cumsum(busy)[:length] > 0
    flight = np.zeros(length + 1, np.int64)
    keep = set(int(i) for i in sel)
    for v in link_vectors(p):
        if v.recv in keep:
            flight[v.handoff] += 1
            flight[min(v.arrival, length)] -= 1
    in_flight = np.cumsum(flight)[:length] > 0
    return int((in_flight & ~computing).sum())


@dataclass
class Generation:
    """`generate`'s result: the new token ids and the cycles of each emulated run."""

    ids: list[int]
    prefill_cycles: int
    decode_cycles: list[int]
    clock_mhz: float
    violations: list = field(default_factory=list)

    @property
    def latency_per_token_s(self) -> float:
        """Seconds per generated token in steady state: the median decode step."""
        cycles = sorted(self.decode_cycles) or [self.prefill_cycles]
        return cycles[len(cycles) // 2] / (self.clock_mhz * 1e6)

    @property
    def tokens_per_s(self) -> float:
        return 1.0 / self.latency_per_token_s


def _decoder_shape(p: Program) -> tuple[int, int]:
    """(max_seq, vocab) of a decoder program with entries prefill(ids, len) and decode(tok, pos)."""
    if not {"prefill", "decode"} <= set(p.entries):
        raise error(
            f"generating needs a decoder program with entries prefill and decode; this one has "
            f"{', '.join(p.entries)} (build one with lpu model gpt2|llama)"
        )
    ids = p.whole("input", "prefill").get("ids")
    logits = [pl for pl in p.placements if pl.role == "output" and pl.graph == "decode"]
    if ids is None or len(ids[1]) != 1 or not logits:
        raise error("the prefill entry must take %ids: i32[max_seq] and decode must return logits")
    return ids[1][0], logits[0].shape[-1]


def check_prompt(p: Program, prompt: list[int], tokens: int) -> None:
    max_seq, vocab = _decoder_shape(p)
    if not prompt:
        raise error("--prompt-ids: give at least one token id")
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise error(f"--prompt-ids: {bad[0]} is not a token id of this model (0..{vocab - 1})")
    if tokens < 1:
        raise error(f"--tokens must be at least 1, got {tokens}")
    if len(prompt) + tokens - 1 > max_seq:
        raise error(
            f"a {len(prompt)}-token prompt and {tokens} new tokens need {len(prompt) + tokens - 1} "
            f"positions; the model was built for --max-seq {max_seq}"
        )


def generate(run_prefill, run_decode, prompt: list[int], tokens: int, max_seq: int):
    """Greedy decoding with any runner: `run_prefill(ids, len)` and `run_decode(tok, pos)` return
    (logits [1, vocab], cycles, violations). Returns (ids, prefill cycles, decode cycles, violations)."""
    ids = np.zeros(max_seq, np.int32)
    ids[: len(prompt)] = prompt
    logits, prefill_cycles, violations = run_prefill(ids, np.int32(len(prompt)))
    out = [int(np.argmax(np.asarray(logits, np.float64)[0]))]
    decode_cycles = []
    for k in range(tokens - 1):
        logits, cycles, v = run_decode(np.array([out[-1]], np.int32), np.int32(len(prompt) + k))
        violations += v
        decode_cycles.append(cycles)
        out.append(int(np.argmax(np.asarray(logits, np.float64)[0])))
    return out, prefill_cycles, decode_cycles, violations


def generate_on_emulator(p: Program, prompt: list[int], tokens: int, weights=None) -> Generation:
    from emulator.run import Emulator

    check_prompt(p, prompt, tokens)
    max_seq, _ = _decoder_shape(p)
    emu = Emulator(p, weights)

    def run(entry):
        def go(a, b):
            names = ("ids", "len") if entry == "prefill" else ("tok", "pos")
            r = emu.run(entry, dict(zip(names, (a, b))))
            return r.outputs[0], r.cycles, list(r.violations)

        return go

    ids, pre, dec, violations = generate(run("prefill"), run("decode"), prompt, tokens, max_seq)
    return Generation(ids, pre, dec, p.system.chip.clock_mhz, violations)


def generate_on_reference(p: Program, prompt: list[int], tokens: int, weights=None) -> list[int]:
    """The same greedy decode by the numpy reference interpreter on the program's own module."""
    text = p.meta.get("module")
    if not text:
        raise error("this program carries no IR module (it was assembled by hand): nothing to check with")
    module = parse(text, "<program module>")
    weights = weights_from_image(p) if weights is None else weights
    missing = [g.name for g in module.params if g.name not in weights]
    if missing:
        raise error(f"--check needs the weights ({missing[0]}, ...): give them with -w")
    ref = Reference(module, weights)
    max_seq, _ = _decoder_shape(p)

    def run(entry):
        def go(a, b):
            names = ("ids", "len") if entry == "prefill" else ("tok", "pos")
            return ref.run(entry, dict(zip(names, (a, b))))[0], 0, []

        return go

    return generate(run("prefill"), run("decode"), prompt, tokens, max_seq)[0]

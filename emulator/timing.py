"""Resolves, from the program alone, which vector every read of every instruction actually sees.

Nothing on the chip is dynamic except the values, so timing is checked before
any value is computed. Each instruction expands into vector steps: step `i` of
an instruction issued on cycle `t` samples its inputs at `t + dskew + i` and
emits its result at `t + dfunc + i` (the contract stated in isa/spec.py).

Streams: a vector written on stream s heading east at position p on cycle c is
at position q >= p on cycle c + (q - p) until a later writer upstream on the same
diagonal replaces it (westward mirrored). So a read at (q, c) sees, among the
writes on its stream with the same diagonal c - q (east) or c + q (west), the one
written nearest upstream of q. Two writes at the same position and cycle collide.

SRAM: a write of vector i lands at `t + dfunc + i` and a read at its sample cycle
sees the latest landed write of that word, or the image. The matrix units and
their accumulators are resolved the same way.

Every read is compared with the instruction's intended source; a difference is
a violation naming chip, queue, cycle, instruction, expected and found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isa.program import Program, source_slots
from isa.spec import BY_CODE, DTYPE_BYTES, DTYPES, FIELDS, OPS, Unit

# Per-opcode lookup tables (indexed by opcode code).
_DSKEW = np.zeros(256, np.int64)
_DFUNC = np.zeros(256, np.int64)
_BUSY_FIXED = np.zeros(256, np.int64)
_BUSY_PER = np.zeros(256, np.int64)
_OUT_COL = np.full(256, -1, np.int64)  # column of the output stream field
_IN_COLS = np.full((256, 3), -1, np.int64)  # columns of the input stream fields
for _s in OPS:
    _DSKEW[_s.code], _DFUNC[_s.code] = _s.dskew, _s.dfunc
    _BUSY_FIXED[_s.code], _BUSY_PER[_s.code] = _s.busy_fixed, _s.busy_per_vector
    if _s.output:
        _OUT_COL[_s.code] = _s.operands.index(_s.output)
    for _k, _f in enumerate(_s.inputs):
        _IN_COLS[_s.code, _k] = _s.operands.index(_f)

CODE = {s.mnemonic: s.code for s in OPS}
UNSUPPORTED: set[str] = set()


@dataclass
class Violation:
    kind: str  # "stream collision", "empty stream", "wrong vector", "stale SRAM word", ...
    chip: int
    queue: str
    cycle: int
    instruction: int
    text: str  # the instruction, as the listing prints it
    expected: str
    found: str
    slot: str = ""  # the input concerned (a stream field, or mem / w / acc)

    def render(self) -> str:
        on = f" input {self.slot}" if self.slot else ""
        return (
            f"{self.kind}: chip {self.chip} {self.queue} cycle {self.cycle} instruction #{self.instruction}"
            f"{on} ({self.text}): expected {self.expected}, found {self.found}"
        )


@dataclass
class Resolved:
    """Steps in execution order, each with the steps (or image rows) its inputs come from."""

    ins: np.ndarray  # instruction index per step
    i: np.ndarray  # vector index within the instruction
    sample: np.ndarray  # cycle the step samples its inputs
    emit: np.ndarray  # cycle its result appears (or lands)
    stream_src: np.ndarray  # [steps, 3]: step that wrote the vector read on input k, or -1
    mem_src: np.ndarray  # step of the SRAM write read (>= 0), -2 - image row, or -1 (never written)
    weights: np.ndarray  # for mm steps: the iw step whose weights it used, or -1
    iw_rows: np.ndarray  # [iw steps, rows]: lw step that loaded each row, or -1
    iw_index: np.ndarray  # per step: its index among iw steps, or -1
    acc_src: np.ndarray  # for acc steps: the mm step that last wrote the slot; for acc_add mm: previous
    link_src: np.ndarray  # for recv steps: the send step whose vector it takes, or -1
    mem_kind: np.ndarray  # 0, or 1 read, 2 write, 3 gather, 4 scatter
    slice_base: np.ndarray  # flat index of word 0 of the step's MEM slice
    mem_addr: np.ndarray  # the addr field
    mem_step: np.ndarray  # the step field
    mem_width: np.ndarray  # words per vector of the dtype
    violations: list[Violation]
    cycles: int  # the cycle after the last activity
    busy: dict[str, int]  # busy cycles per unit kind


def _steps(p: Program, sel: np.ndarray):
    counts = p.n[sel].astype(np.int64)
    ins = np.repeat(sel, counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    i = np.arange(len(ins), dtype=np.int64) - starts
    return ins, i


def _latest(keys_w: np.ndarray, order_key_w: np.ndarray, keys_r: np.ndarray, order_key_r: np.ndarray):
    """For each read, the write with the same key and the largest order value <= the read's.

    Returns the index into the writes, or -1.
    """
    if len(keys_w) == 0 or len(keys_r) == 0:
        return np.full(len(keys_r), -1, np.int64)
    order = np.lexsort((order_key_w, keys_w))
    kw, ow = keys_w[order], order_key_w[order]
    # search on the pair (key, order value): combine into one sortable float-free key
    span = int(max(ow.max(), order_key_r.max()) - min(ow.min(), order_key_r.min()) + 2)
    base = int(min(ow.min(), order_key_r.min()))
    cw = kw.astype(object) if int(kw.max()) * span > 2**62 else kw
    combined_w = cw * span + (ow - base)
    combined_r = (keys_r.astype(object) if cw is not kw else keys_r) * span + (order_key_r - base)
    pos = np.searchsorted(combined_w, combined_r, side="right") - 1
    ok = pos >= 0
    ok[ok] = kw[pos[ok]] == keys_r[ok]
    out = np.full(len(keys_r), -1, np.int64)
    out[ok] = order[pos[ok]]
    return out


def resolve(p: Program, entry: int, initialised: set[tuple[int, int, int]] | dict) -> Resolved:
    """`initialised` maps (chip, mem slice index, word) of the image and placed tensors to image rows."""
    chip_cfg = p.system.chip
    queues = chip_cfg.queue_table()
    S = chip_cfg.streams_per_direction
    positions = np.array([q.x for q in queues], np.int64)
    units = [q.unit for q in queues]
    mem_index = {name: k for k, name in enumerate(chip_cfg.mem_slice_names())}
    q_slice = np.array([mem_index.get(q.slice, -1) for q in queues], np.int64)
    # an MXM plane: (slice position, plane) -> small integer
    q_plane = np.array([q.x * 64 + q.plane if q.unit is Unit.MXM else -1 for q in queues], np.int64)

    sel = np.nonzero(p.entry == entry)[0]
    for j in sel:
        m = BY_CODE[int(p.opcode[j])].mnemonic
        if m in UNSUPPORTED:
            from isa.diagnostics import error

            raise error(
                f"the emulator does not run '{m}' yet (instruction {int(j)}); it arrives with the "
                "KV-cache and many-chip work"
            )
    ins, vec = _steps(p, sel)
    op = p.opcode[ins].astype(np.int64)
    t = p.cycle[ins]
    sample = t + _DSKEW[op] + vec
    emit = t + _DFUNC[op] + vec
    chip = p.chip[ins].astype(np.int64)
    queue = p.queue[ins].astype(np.int64)
    pos = positions[queue]
    nsteps = len(ins)
    violations: list[Violation] = []

    def text(j: int) -> str:
        from isa.assembly import instruction_text

        return instruction_text(p, j)

    def report(kind: str, step: int, cycle: int, expected: str, found: str, slot: str = "") -> None:
        j = int(ins[step])
        violations.append(
            Violation(
                kind,
                int(p.chip[j]),
                queues[int(p.queue[j])].name,
                int(cycle),
                j,
                text(j),
                expected,
                found,
                slot,
            )
        )

    def describe(step: int) -> str:
        if step < 0:
            return "nothing"
        return f"vector {int(vec[step])} of #{int(ins[step])}"

    # -- streams ----------------------------------------------------------------------------------
    out_col = _OUT_COL[op].copy()
    # an mm that accumulates puts nothing on its stream
    mm_steps = np.nonzero(op == CODE["mm"])[0]
    mode_col = BY_CODE[CODE["mm"]].operands.index("mode")
    out_col[mm_steps[p.fields[ins[mm_steps], mode_col] > 0]] = -1
    w_idx = np.nonzero(out_col >= 0)[0]
    w_val = p.fields[ins[w_idx], out_col[w_idx]]
    w_dir, w_sid = w_val // S, w_val % S
    w_u = np.where(w_dir == 0, pos[w_idx], -pos[w_idx])
    w_group = (chip[w_idx] * 2 + w_dir) * S + w_sid
    w_diag = emit[w_idx] - w_u
    diag_base = int(min(w_diag.min(initial=0), (sample - pos).min(initial=0), (sample + pos).min(initial=0)))
    diag_span = int(
        max(w_diag.max(initial=0), (sample - pos).max(initial=0), (sample + pos).max(initial=0))
        - diag_base
        + 1
    )
    w_key = w_group * diag_span + (w_diag - diag_base)

    # collisions: two writes on the same stream, position and cycle
    if len(w_idx):
        order = np.lexsort((w_idx, w_u, w_key))
        same = (w_key[order][1:] == w_key[order][:-1]) & (w_u[order][1:] == w_u[order][:-1])
        for k in np.nonzero(same)[0]:
            a, b = w_idx[order[k]], w_idx[order[k + 1]]
            report(
                "stream collision",
                b,
                emit[b],
                f"stream {_stream(int(w_val[order[k + 1]]), S)} free at x={int(pos[b])}",
                describe(a),
            )

    stream_src = np.full((nsteps, 3), -1, np.int64)
    for k in range(3):
        col = _IN_COLS[op, k]
        r_idx = np.nonzero(col >= 0)[0]
        if not len(r_idx):
            continue
        r_val = p.fields[ins[r_idx], col[r_idx]]
        r_dir, r_sid = r_val // S, r_val % S
        r_u = np.where(r_dir == 0, pos[r_idx], -pos[r_idx])
        r_key = ((chip[r_idx] * 2 + r_dir) * S + r_sid) * diag_span + (sample[r_idx] - r_u - diag_base)
        found = _latest(w_key, w_u, r_key, r_u)
        found_step = np.where(found >= 0, w_idx[np.maximum(found, 0)], -1)
        stream_src[r_idx, k] = found_step
        _check_sources(p, ins, vec, r_idx, k, found_step, sample, report, describe, "stream")

    # -- SRAM: addresses only; which write each access sees is decided as values flow (kernel) ----
    # (gather and scatter take their addresses from vectors, so SRAM cannot be resolved statically)
    words = chip_cfg.words_per_slice
    nslices = chip_cfg.mem_slices
    mem_kind = np.zeros(nsteps, np.int64)
    for k, name in enumerate(("read", "write", "gather", "scatter"), start=1):
        mem_kind[op == CODE[name]] = k
    mem_steps = np.nonzero(mem_kind)[0]
    addr_col = {s.code: s.operands.index("addr") for s in OPS if s.unit is Unit.MEM}
    step_col = {s.code: s.operands.index("step") for s in OPS if s.unit is Unit.MEM}
    dt_col = {s.code: s.operands.index("dt") for s in OPS if s.unit is Unit.MEM}
    slice_base = np.zeros(nsteps, np.int64)
    mem_addr = np.zeros(nsteps, np.int64)
    mem_step = np.zeros(nsteps, np.int64)
    mem_width = np.ones(nsteps, np.int64)
    if len(mem_steps):
        codes = op[mem_steps]
        adc = np.array([addr_col[int(c)] for c in codes], np.int64)
        stc = np.array([step_col[int(c)] for c in codes], np.int64)
        dtc = np.array([dt_col[int(c)] for c in codes], np.int64)
        slice_base[mem_steps] = (chip[mem_steps] * nslices + q_slice[queue[mem_steps]]) * words
        mem_addr[mem_steps] = p.fields[ins[mem_steps], adc]
        mem_step[mem_steps] = p.fields[ins[mem_steps], stc]
        widths = np.array([DTYPE_BYTES[d] for d in DTYPES], np.int64)
        mem_width[mem_steps] = widths[p.fields[ins[mem_steps], dtc]]
    mem_src = np.full(nsteps, -1, np.int64)

    # -- matrix units -----------------------------------------------------------------------------
    plane = q_plane[queue]
    unit_key = chip * (1 << 20) + plane
    lw = np.nonzero(op == CODE["lw"])[0]
    iw = np.nonzero(op == CODE["iw"])[0]
    mm = np.nonzero(op == CODE["mm"])[0]
    acc = np.nonzero(op == CODE["acc"])[0]
    rows_max = chip_cfg.mxm_k_i8
    row_col = BY_CODE[CODE["lw"]].operands.index("row")
    lw_row = p.fields[ins[lw], row_col] + vec[lw]
    iw_index = np.full(nsteps, -1, np.int64)
    iw_index[iw] = np.arange(len(iw))
    iw_rows = np.full((len(iw), rows_max), -1, np.int64)
    if len(iw):
        # the previous install on the same unit: rows loaded before it were cleared by it
        order = np.lexsort((sample[iw], unit_key[iw]))
        prev_t = np.full(len(iw), -(1 << 40), np.int64)
        for a, b in zip(order[:-1], order[1:]):
            if unit_key[iw[a]] == unit_key[iw[b]]:
                prev_t[b] = sample[iw[a]]
        keys_r = np.repeat(unit_key[iw] * rows_max, rows_max) + np.tile(np.arange(rows_max), len(iw))
        when_r = np.repeat(sample[iw], rows_max)
        found = _latest(unit_key[lw] * rows_max + lw_row, emit[lw], keys_r, when_r)
        loaded = np.where(found >= 0, lw[np.maximum(found, 0)], -1)
        fresh = (loaded >= 0) & (emit[np.maximum(loaded, 0)] > np.repeat(prev_t, rows_max))
        iw_rows = np.where(fresh, loaded, -1).reshape(len(iw), rows_max)
        for k in np.nonzero((iw_rows < 0).all(axis=1))[0]:
            report(
                "empty weight install",
                iw[k],
                sample[iw[k]],
                "rows loaded by lw since the last install",
                "no rows",
            )
    weights = np.full(nsteps, -1, np.int64)
    if len(mm):
        ready = emit[iw]  # iw's dfunc: the array is usable from t + dfunc
        found = _latest(unit_key[iw], ready, unit_key[mm], sample[mm])
        weights[mm] = np.where(found >= 0, iw[np.maximum(found, 0)], -1)
        w_slot = len(BY_CODE[CODE["mm"]].inputs)
        for m_step in mm:
            j = int(ins[m_step])
            want = int(p.src[j, w_slot])
            got = weights[m_step]
            if got < 0:
                report(
                    "matrix unit not ready",
                    m_step,
                    sample[m_step],
                    f"weights installed by #{want}" if want >= 0 else "installed weights",
                    "no installed weights",
                    "w",
                )
            elif want >= 0 and int(ins[got]) != want:
                report(
                    "wrong weights",
                    m_step,
                    sample[m_step],
                    f"weights installed by #{want}",
                    f"weights installed by #{int(ins[got])}",
                    "w",
                )

    acc_src = np.full(nsteps, -1, np.int64)
    slot_col = BY_CODE[CODE["mm"]].operands.index("slot")
    acc_slot_col = BY_CODE[CODE["acc"]].operands.index("slot")
    into = mm[p.fields[ins[mm], mode_col] > 0] if len(mm) else mm
    slots_max = chip_cfg.mxm_acc_slots
    a_key_w = unit_key[into] * slots_max + p.fields[ins[into], slot_col] + vec[into]
    if len(into):
        # acc_add adds to what the slot held just before its own result lands
        found = _latest(a_key_w, emit[into], a_key_w, emit[into] - 1)
        acc_src[into] = np.where(found >= 0, into[np.maximum(found, 0)], -1)
    if len(acc):
        a_key_r = unit_key[acc] * slots_max + p.fields[ins[acc], acc_slot_col] + vec[acc]
        found = _latest(a_key_w, emit[into], a_key_r, sample[acc])
        acc_src[acc] = np.where(found >= 0, into[np.maximum(found, 0)], -1)
        _check_sources(p, ins, vec, acc, 0, acc_src[acc], sample, report, describe, "accumulator")

    # -- chip-to-chip links: FIFO per direction, exact latency and serialisation ----------------------
    link_src = np.full(nsteps, -1, np.int64)
    sends = np.nonzero(op == CODE["send"])[0]
    recvs = np.nonzero(op == CODE["recv"])[0]
    if len(sends) or len(recvs):
        system = p.system
        ser, latency, depth = (
            system.link_cycles_per_vector,
            system.link_latency_cycles,
            system.rx_buffer_depth,
        )
        own = system.links_of_chips()
        send_col = BY_CODE[CODE["send"]].operands.index("link")
        recv_col = BY_CODE[CODE["recv"]].operands.index("link")
        outgoing: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (system link, from chip) -> handoffs
        incoming: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for steps, col, table in ((sends, send_col, outgoing), (recvs, recv_col, incoming)):
            for st in steps:
                c, k = int(chip[st]), int(p.fields[ins[st], col])
                if k >= len(own[c]):
                    report(
                        "no such link",
                        st,
                        sample[st],
                        f"one of the {len(own[c])} links of chip {c}",
                        f"link {k}",
                        "link",
                    )
                    continue
                sys_link, other = own[c][k]
                key = (sys_link, c) if table is outgoing else (sys_link, other)
                table.setdefault(key, []).append((int(sample[st]), int(st)))
        for handoffs in outgoing.values():
            handoffs.sort()
            for (t0, _), (t1, st) in zip(handoffs, handoffs[1:]):
                if t1 < t0 + ser:
                    report(
                        "link overrun",
                        st,
                        t1,
                        f"the link free from cycle {t0 + ser} ({ser} cycles a vector)",
                        f"a vector handed over on cycle {t1}",
                        "link",
                    )
        for key, takes in incoming.items():
            takes.sort()
            sent = sorted(outgoing.get(key, []))
            arrivals = [t + ser + latency for t, _ in sent]
            for idx, (c_r, st_r) in enumerate(takes):
                if idx >= len(sent):
                    report(
                        "receive of nothing", st_r, c_r, "a vector sent on this link", "nothing sent", "link"
                    )
                    continue
                if c_r < arrivals[idx]:
                    report(
                        "receive at the wrong cycle",
                        st_r,
                        c_r,
                        f"a vector that arrives on cycle {arrivals[idx]}",
                        f"a receive on cycle {c_r}, before it arrives",
                        "link",
                    )
                    continue
                link_src[st_r] = sent[idx][1]
            # at each arrival, the vectors waiting (arrived, not yet taken) must fit the receive buffer
            taken = sorted(c for c, _ in takes)
            for idx, a in enumerate(arrivals):
                waiting = (idx + 1) - int(np.searchsorted(taken, a, side="right"))
                if waiting > depth:
                    st = sent[idx][1]
                    report(
                        "receive buffer overrun",
                        st,
                        a,
                        f"at most {depth} vector(s) waiting",
                        f"{waiting} waiting on cycle {a}",
                        "link",
                    )
        slot = len(BY_CODE[CODE["recv"]].inputs)
        _check_sources(p, ins, vec, recvs, slot, link_src[recvs], sample, report, describe, "link")

    # -- queues -----------------------------------------------------------------------------------
    busy = _BUSY_FIXED[p.opcode[sel]] + _BUSY_PER[p.opcode[sel]] * p.n[sel]
    order = np.lexsort((p.cycle[sel], p.queue[sel], p.chip[sel]))
    s_sorted = sel[order]
    b_sorted = busy[order]
    for a in range(len(s_sorted) - 1):
        x, y = s_sorted[a], s_sorted[a + 1]
        if p.chip[x] == p.chip[y] and p.queue[x] == p.queue[y] and p.cycle[y] < p.cycle[x] + b_sorted[a]:
            violations.append(
                Violation(
                    "queue overlap",
                    int(p.chip[y]),
                    queues[int(p.queue[y])].name,
                    int(p.cycle[y]),
                    int(y),
                    text(int(y)),
                    f"queue free from cycle {int(p.cycle[x] + b_sorted[a])} (after #{int(x)})",
                    f"issue on cycle {int(p.cycle[y])}",
                )
            )
    busy_by_unit: dict[str, int] = {u.value: 0 for u in Unit}
    for j, b in zip(sel, busy):
        busy_by_unit[units[int(p.queue[j])].value] += int(b)
    last = (
        int(max(emit.max(initial=0), sample.max(initial=0), (p.cycle[sel] + busy).max(initial=0) - 1)) + 1
        if len(sel)
        else 0
    )

    # execution order: by sample cycle, then instruction, then vector
    order = np.lexsort((vec, ins, sample))
    remap = np.empty(nsteps, np.int64)
    remap[order] = np.arange(nsteps)

    def re(a):
        return np.where(a >= 0, remap[np.maximum(a, 0)], a)

    return Resolved(
        ins=ins[order],
        i=vec[order],
        sample=sample[order],
        emit=emit[order],
        stream_src=re(stream_src[order]),
        mem_src=re(mem_src[order]),
        weights=re(weights[order]),
        iw_rows=re(iw_rows),
        iw_index=iw_index[order],
        acc_src=re(acc_src[order]),
        link_src=re(link_src[order]),
        mem_kind=mem_kind[order],
        slice_base=slice_base[order],
        mem_addr=mem_addr[order],
        mem_step=mem_step[order],
        mem_width=mem_width[order],
        violations=sorted(violations, key=lambda v: (v.cycle, v.chip, v.instruction, v.kind)),
        cycles=last,
        busy=busy_by_unit,
    )


def _stream(v: int, S: int) -> str:
    return f"{'EW'[v // S]}{v % S}"


def _continued(p, want: np.ndarray, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intended sources past the end of their row, followed into the next rows while those are
    further pieces of the same instruction (same entry, chip, queue and opcode, issued right after):
    vector j >= n of row r is vector j - n of row r + 1 (isa/program.py)."""
    want, vec = want.copy(), vec.copy()
    rows = len(p.n)
    while True:
        ok = want >= 0
        w = np.where(ok, want, 0)
        nxt = np.minimum(w + 1, rows - 1)
        go = (
            ok
            & (w + 1 < rows)
            & (vec >= p.n[w])
            & (p.entry[nxt] == p.entry[w])
            & (p.chip[nxt] == p.chip[w])
            & (p.queue[nxt] == p.queue[w])
            & (p.opcode[nxt] == p.opcode[w])
            & (p.cycle[nxt] == p.cycle[w] + p.n[w])
        )
        if not go.any():
            return want, vec
        vec = np.where(go, vec - p.n[w], vec)
        want = np.where(go, w + 1, want)


def _check_sources(p, ins, vec, idx, slot_k, found_step, sample, report, describe, what):
    want = p.src[ins[idx], slot_k]
    off = p.src_off[ins[idx], slot_k]
    found_ins = np.where(found_step >= 0, ins[np.maximum(found_step, 0)], -1)
    found_vec = np.where(found_step >= 0, vec[np.maximum(found_step, 0)], -1)
    checked = want >= 0
    want_vec = vec[idx] + off
    if what == "stream":  # past the end of a split instruction's piece: the next piece (same op, queue)
        want, want_vec = _continued(p, want, want_vec)
    bad = checked & ((found_ins != want) | (found_vec != want_vec))
    for k in np.nonzero(bad)[0]:
        step = idx[k]
        expected = f"vector {int(want_vec[k])} of #{int(want[k])}"
        if found_step[k] < 0:
            kind = "empty stream" if what == "stream" else f"empty {what}"
        else:
            kind = "wrong vector" if what == "stream" else f"wrong {what} value"
        slot = source_slots(BY_CODE[int(p.opcode[int(ins[step])])])[slot_k]
        report(kind, step, sample[step], expected, describe(int(found_step[k])), slot)


__all__ = ["FIELDS", "Resolved", "Violation", "resolve", "source_slots"]

"""The emulator's hot loop: computes every vector of every step, in execution order (numba).

Inputs are plain arrays built by emulator/run.py from the resolved timing
(emulator/timing.py): each step knows which earlier step (or image row) each of
its inputs comes from, so this loop only computes values. `NUMBA_DISABLE_JIT=1`
runs the same code as plain Python.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from emulator.numerics import F32, I8, I32, convert, to_dtype

# What a step does. run.py maps mnemonics to these numbers (ACTIONS); they are local to this
# file so that numba's cache sees any change to them.
(
    NOTHING,
    READ,
    WRITE,
    MOV,
    SPLAT,
    ADD,
    SUB,
    MUL,
    DIV,
    MAX,
    MIN,
    ADDI,
    MULI,
    NEG,
    RELU,
    EXP,
    LOG,
    TANH,
    SIGMOID,
    ERF,
    SQRT,
    RSQRT,
    RECIP,
    LT,
    GT,
    EQ,
    SEL,
    CVT,
    LW,
    IW,
    MM,
    ACC,
    SHIFT,
    ROT,
    PERM,
    BCAST,
    TRANS,
    LRED,
    GATHER,
    SCATTER,
    SEND,
    RECV,
) = range(42)

ACTIONS = {
    "nop": NOTHING,
    "sync": NOTHING,
    "notify": NOTHING,
    "read": READ,
    "write": WRITE,
    "mov": MOV,
    "splat": SPLAT,
    "add": ADD,
    "sub": SUB,
    "mul": MUL,
    "div": DIV,
    "max": MAX,
    "min": MIN,
    "addi": ADDI,
    "muli": MULI,
    "neg": NEG,
    "relu": RELU,
    "exp": EXP,
    "log": LOG,
    "tanh": TANH,
    "sigmoid": SIGMOID,
    "erf": ERF,
    "sqrt": SQRT,
    "rsqrt": RSQRT,
    "recip": RECIP,
    "lt": LT,
    "gt": GT,
    "eq": EQ,
    "sel": SEL,
    "cvt": CVT,
    "lw": LW,
    "iw": IW,
    "mm": MM,
    "acc": ACC,
    "shift": SHIFT,
    "rot": ROT,
    "perm": PERM,
    "bcast": BCAST,
    "trans": TRANS,
    "lred": LRED,
    "gather": GATHER,
    "scatter": SCATTER,
    "send": SEND,
    "recv": RECV,
}


@numba.njit(cache=True, error_model="numpy")
def _unary(action: int, x: float) -> float:
    if action == NEG:
        return -x
    if action == RELU:  # NaN stays NaN, as in numpy.maximum(x, 0)
        return x if x > 0.0 or x != x else 0.0
    if action == EXP:
        if x != x:
            return x
        return math.exp(x) if x < 709.0 else math.inf
    if action == LOG:
        return np.log(x)
    if action == TANH:
        return math.tanh(x)
    if action == SIGMOID:
        if x < -709.0:
            return 0.0
        return 1.0 / (1.0 + math.exp(-x))
    if action == ERF:
        return math.erf(x)
    if action == SQRT:
        return np.sqrt(x)
    if action == RSQRT:
        return 1.0 / np.sqrt(x)
    if action == RECIP:
        return 1.0 / x
    return x


@numba.njit(cache=True, error_model="numpy")
def _binary(action: int, a: float, b: float) -> float:
    if action == ADD or action == ADDI:
        return a + b
    if action == SUB:
        return a - b
    if action == MUL or action == MULI:
        return a * b
    if action == DIV:
        return a / b
    if action == MAX:  # NaN wins, as in numpy.maximum
        if a != a or b != b:
            return math.nan
        return a if a >= b else b
    if action == MIN:
        if a != a or b != b:
            return math.nan
        return a if a <= b else b
    if action == LT:
        return 1.0 if a < b else 0.0
    if action == GT:
        return 1.0 if a > b else 0.0
    if action == EQ:
        return 1.0 if a == b else 0.0
    return 0.0


@numba.njit(cache=True)
def _store(x: float, dt: int) -> float:
    """Round a result the way the reference does: through f32 for float types, then to dt."""
    if dt <= 2:  # f32, f16, bf16
        return to_dtype(to_dtype(x, F32), dt)
    return to_dtype(x, dt)


@numba.njit(cache=True, error_model="numpy")
def execute(action, dt, to, imm, k, lane, mapi, red, kof, mode,  # per step
            stream_src, weights, iw_index, iw_rows, acc_src, link_src,  # resolved sources
            trans_block, block_out, block_src,  # trans: a block's output steps and their inputs
            vec, sample, emit, mem_kind, slice_base, mem_addr, mem_step, mem_width, words,  # SRAM access
            prov, pend_prov, pend_land, touched, image, maps, lanes, k_i8, k_f16, out):  # fmt: skip
    """`prov[word]` (flat over chips and slices) starts as -1 (never written) or -2 - image row and
    becomes the step whose write landed last; a write lands at its emit cycle, so each word keeps
    one pending write (`pend_prov`, landing at `pend_land`, both -1 when none) that a later access
    commits once it has landed. The word arrays are the caller's, kept across runs: every word a
    write touches is listed in `touched` (the first `n_touched` entries, returned), so the caller
    resets only those instead of the whole of SRAM."""
    steps = action.shape[0]
    rows = iw_rows.shape[1]
    installed = np.zeros((iw_rows.shape[0], rows, lanes))
    found = np.full(steps, -1, np.int64)  # what each read or gather saw
    bad_address = np.zeros(steps, np.bool_)
    n_touched = 0
    for s in range(steps):
        out[s, :] = 0.0  # `out` (every vector step's value) is the caller's buffer, reused across runs
        act = action[s]
        a_src = stream_src[s, 0]
        if act == NOTHING:
            continue
        if mem_kind[s] != 0:
            kind = mem_kind[s]
            if kind <= 2:  # read, write: a static address
                word = mem_addr[s] + vec[s] * mem_step[s]
            else:  # gather, scatter: lane 0 of the idx vector picks the row
                idx = out[a_src, 0] if a_src >= 0 else 0.0
                word = mem_addr[s] + np.int64(idx) * mem_step[s] + vec[s] * mem_width[s]
            if word < 0 or word + mem_width[s] > words:
                bad_address[s] = True
                continue
            flat = slice_base[s] + word
            if pend_land[flat] >= 0 and pend_land[flat] <= sample[s]:
                prov[flat] = pend_prov[flat]
                pend_land[flat] = -1
            if kind == 1 or kind == 3:
                m = prov[flat]
                found[s] = m
                if m >= 0:
                    out[s] = out[m]
                elif m <= -2:
                    out[s] = image[-2 - m]
            else:
                data = a_src if kind == 2 else stream_src[s, 1]
                if data >= 0:
                    out[s] = out[data]
                if pend_land[flat] >= 0:  # an earlier write still in flight lands first
                    prov[flat] = pend_prov[flat]
                pend_prov[flat] = s
                pend_land[flat] = emit[s]
                touched[n_touched] = flat
                n_touched += 1
            continue
        if act == LW or act == SEND:
            if a_src >= 0:
                out[s] = out[a_src]
        elif act == RECV:
            if link_src[s] >= 0:
                out[s] = out[link_src[s]]
        elif act == SPLAT:
            v = _store(imm[s], dt[s])
            out[s, :] = v
        elif act == MOV:
            if a_src >= 0:
                out[s] = out[a_src]
        elif act >= ADD and act <= MIN or act >= LT and act <= EQ:
            b_src = stream_src[s, 1]
            for lane_i in range(lanes):
                a = out[a_src, lane_i] if a_src >= 0 else 0.0
                b = out[b_src, lane_i] if b_src >= 0 else 0.0
                r = _binary(act, a, b)
                out[s, lane_i] = r if act >= LT else _store(r, dt[s])
        elif act == ADDI or act == MULI:
            for lane_i in range(lanes):
                a = out[a_src, lane_i] if a_src >= 0 else 0.0
                out[s, lane_i] = _store(_binary(act, a, imm[s]), dt[s])
        elif act >= NEG and act <= RECIP:
            for lane_i in range(lanes):
                a = out[a_src, lane_i] if a_src >= 0 else 0.0
                out[s, lane_i] = _store(_unary(act, a), dt[s])
        elif act == SEL:
            a_i, b_i = stream_src[s, 1], stream_src[s, 2]
            for lane_i in range(lanes):
                c = out[a_src, lane_i] if a_src >= 0 else 0.0
                if c != 0.0:
                    out[s, lane_i] = out[a_i, lane_i] if a_i >= 0 else 0.0
                else:
                    out[s, lane_i] = out[b_i, lane_i] if b_i >= 0 else 0.0
        elif act == CVT:
            for lane_i in range(lanes):
                a = out[a_src, lane_i] if a_src >= 0 else 0.0
                out[s, lane_i] = convert(a, to[s])
        elif act == IW:
            w = iw_index[s]
            for r in range(rows):
                src = iw_rows[w, r]
                if src >= 0:
                    installed[w, r] = out[src]
        elif act == MM:
            w = weights[s]
            kk = k_i8 if dt[s] == I8 else k_f16
            integer = dt[s] == I8
            prev = acc_src[s]
            if w >= 0:
                wi = iw_index[w]
                for n in range(lanes):
                    total = 0.0
                    for q in range(kk):
                        lane_q = kof[s] + q
                        if lane_q < lanes and a_src >= 0:
                            total += out[a_src, lane_q] * installed[wi, q, n]
                    out[s, n] = total if integer else to_dtype(total, F32)
            if mode[s] == 0:
                for n in range(lanes):
                    out[s, n] = to_dtype(out[s, n], to[s]) if not integer else to_dtype(out[s, n], I32)
            elif mode[s] == 2 and prev >= 0:
                for n in range(lanes):
                    v = out[prev, n] + out[s, n]
                    out[s, n] = to_dtype(v, I32) if integer else to_dtype(v, F32)
        elif act == ACC:
            m = acc_src[s]
            if m >= 0:
                for n in range(lanes):
                    out[s, n] = _store(out[m, n], to[s])
        elif act == SHIFT or act == ROT:
            for lane_i in range(lanes):
                src_lane = lane_i - k[s]
                if act == ROT:
                    src_lane = src_lane % lanes
                if 0 <= src_lane < lanes and a_src >= 0:
                    out[s, lane_i] = out[a_src, src_lane]
        elif act == PERM:
            if a_src >= 0:
                for lane_i in range(lanes):
                    from_lane = maps[mapi[s], lane_i]
                    out[s, lane_i] = out[a_src, from_lane] if from_lane >= 0 else 0.0
        elif act == BCAST:
            if a_src >= 0:
                out[s, :] = out[a_src, lane[s]]
        elif act == LRED:
            if a_src >= 0:
                if red[s] == 0:
                    total = 0.0
                    for lane_i in range(lanes):
                        total += out[a_src, lane_i]
                    v = _store(total, dt[s])
                else:
                    v = out[a_src, 0]
                    for lane_i in range(1, lanes):
                        x = out[a_src, lane_i]
                        if x > v or x != x:
                            v = x
                out[s, :] = v
        elif act == TRANS:
            # A block's outputs need all 16 of its inputs: fill the block at its last step
            # (its consumers read from t + dfunc on, after every input has been sampled).
            # Output r, lane 16 g + c = input c, lane 16 g + r (16 x 16 per superlane).
            b = trans_block[s]
            if b >= 0 and block_out[b, 15] == s:
                for r in range(16):
                    dst = block_out[b, r]
                    for g in range(lanes // 16):
                        for c in range(16):
                            src = block_src[b, c]
                            out[dst, 16 * g + c] = out[src, 16 * g + r] if src >= 0 else 0.0
    for t in range(n_touched):  # everything in flight has landed when the program ends
        w = touched[t]
        if pend_land[w] >= 0:
            prov[w] = pend_prov[w]
            pend_land[w] = -1
            pend_prov[w] = -1
    return out, installed, found, bad_address, n_touched

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

from emulator.numerics import F32, I8, I32, convert, round_row, to_dtype

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

ZERO = 0  # the value slot that always holds zeros (a source that is missing, a nop, an install)
FOREVER = np.int64(1) << 62


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
    if dt <= 2:  # f32, f16, bf16: the hardware conversion to f32 rounds as to_dtype(x, F32) does
        y = np.float64(np.float32(x))
        return y if dt == F32 else to_dtype(y, dt)
    return to_dtype(x, dt)


@numba.njit(cache=True)
def _store_row(v, dt: int, bits, via_f32: bool = True) -> None:
    """`_store` on every lane of a result vector (`to_dtype` without `via_f32`)."""
    if dt <= 2:
        round_row(v, dt, via_f32, bits)
    else:
        for i in range(v.shape[0]):
            v[i] = to_dtype(v[i], dt)


@numba.njit(cache=True, inline="always")
def _row(alias, x, out, image):
    """Where the value of step x lives: (out, row) or (image, row)."""
    a = alias[x]
    if a >= 0:
        return out, a
    return image, -1 - a


@numba.njit(cache=True, error_model="numpy")
def execute(action, dt, to, imm, k, lane, mapi, red, kof, mode,  # per step
            stream_src, weights, iw_index, iw_rows, acc_src, link_src,  # resolved sources
            trans_block, block_out, block_src,  # trans: a block's output steps and their inputs
            vec, sample, emit, mem_kind, slice_base, mem_addr, mem_step, mem_width, words,  # SRAM access
            prov, pend_prov, pend_land, touched, image, image_width, maps, map_run, lanes, k_i8, k_f16,
            slot, out, alias, found, bad_address):  # fmt: skip
    """`prov[word]` (flat over chips and slices) starts as -1 (never written) or -2 - image row and
    becomes the step whose write landed last; a write lands at its emit cycle, so each word keeps
    one pending write (`pend_prov`, landing at `pend_land`, both -1 when none) that a later access
    commits once it has landed. All three hold their values plus one, so that 0 (never written,
    nothing pending) is what fresh zeroed pages hold: the SRAM of chips and slices a program never
    touches costs no memory. The word arrays are the caller's, kept across runs: every word a
    write touches is listed in `touched` (the first `n_touched` entries, returned), so the caller
    resets only those instead of the whole of SRAM.

    Values are written once, so a step that only moves a vector (a read, a write, lw, mov, send,
    recv) copies nothing: `alias[s]` says where its value lives (>= 0: row of `out`, the caller's
    buffer reused across runs; < 0: row -1 - alias of `image`). The caller reads values through it.
    A step that computes a value writes it to its slot, row `slot[s]` of `out` (`value_slots`:
    rows are reused once no later step can read them; row ZERO stays zero).
    `alias`, `found` (what each read or gather saw) and `bad_address` are the caller's buffers too,
    one entry per step, filled here (fresh pages for them would cost more than small programs' work).
    `image_width[row]` is one past the last nonzero lane of an image row (`row_widths`): a matrix
    pass by a weight row of the image stops there unless the activation is not finite."""
    steps = action.shape[0]
    rows = iw_rows.shape[1]
    for s in range(steps):
        found[s] = -1
        bad_address[s] = False
        alias[s] = slot[s]
    zrow = np.zeros((1, lanes))  # a zero vector for sources that are missing
    bits = np.zeros(lanes, np.int64)  # round_row's scratch
    acc = np.zeros(lanes)  # a matmul's sums (a buffer of its own: no aliasing with `out` in the loop)
    n_touched = 0
    for s in range(steps):
        act = action[s]
        a_src = stream_src[s, 0]
        if act == NOTHING:
            alias[s] = ZERO
            continue
        if a_src >= 0:
            a_arr, a_row = _row(alias, a_src, out, image)
        else:
            a_arr, a_row = out, -1
        if mem_kind[s] != 0:
            kind = mem_kind[s]
            if kind <= 2:  # read, write: a static address
                word = mem_addr[s] + vec[s] * mem_step[s]
            else:  # gather, scatter: lane 0 of the idx vector picks the row
                idx = a_arr[a_row, 0] if a_src >= 0 else 0.0
                word = mem_addr[s] + np.int64(idx) * mem_step[s] + vec[s] * mem_width[s]
            if word < 0 or word + mem_width[s] > words:
                bad_address[s] = True
                alias[s] = ZERO
                continue
            flat = slice_base[s] + word
            landing = pend_land[flat] - 1
            if landing >= 0 and landing <= sample[s]:
                prov[flat] = pend_prov[flat]
                pend_land[flat] = 0
            if kind == 1 or kind == 3:
                m = prov[flat] - 1
                found[s] = m
                if m >= 0:
                    alias[s] = alias[m]
                elif m <= -2:
                    alias[s] = m + 1  # image row -2 - m
                else:
                    alias[s] = ZERO
            else:
                data = a_src if kind == 2 else stream_src[s, 1]
                if data >= 0:
                    alias[s] = alias[data]
                else:
                    alias[s] = ZERO
                if pend_land[flat] > 0:  # an earlier write still in flight lands first
                    prov[flat] = pend_prov[flat]
                pend_prov[flat] = s + 1
                pend_land[flat] = emit[s] + 1
                touched[n_touched] = flat
                n_touched += 1
            continue
        if act == LW or act == SEND or act == MOV:
            if a_src >= 0:
                alias[s] = alias[a_src]
            else:
                alias[s] = ZERO
            continue
        if act == RECV:
            if link_src[s] >= 0:
                alias[s] = alias[link_src[s]]
            else:
                alias[s] = ZERO
            continue
        if a_src < 0:
            a_arr, a_row = zrow, 0
        o = slot[s]  # where this step's value goes
        if act == SPLAT:
            v = _store(imm[s], dt[s])
            out[o, :] = v
        elif act >= ADD and act <= MIN or act >= LT and act <= EQ:
            b_src = stream_src[s, 1]
            if b_src >= 0:
                b_arr, b_row = _row(alias, b_src, out, image)
            else:
                b_arr, b_row = zrow, 0
            if act == ADD:  # the common ones without _binary's dispatch, lane by lane
                for lane_i in range(lanes):
                    out[o, lane_i] = a_arr[a_row, lane_i] + b_arr[b_row, lane_i]
            elif act == MUL:
                for lane_i in range(lanes):
                    out[o, lane_i] = a_arr[a_row, lane_i] * b_arr[b_row, lane_i]
            elif act == SUB:
                for lane_i in range(lanes):
                    out[o, lane_i] = a_arr[a_row, lane_i] - b_arr[b_row, lane_i]
            else:
                for lane_i in range(lanes):
                    out[o, lane_i] = _binary(act, a_arr[a_row, lane_i], b_arr[b_row, lane_i])
            if act < LT:
                _store_row(out[o], dt[s], bits)
        elif act == ADDI or act == MULI:
            for lane_i in range(lanes):
                out[o, lane_i] = _binary(act, a_arr[a_row, lane_i], imm[s])
            _store_row(out[o], dt[s], bits)
        elif act >= NEG and act <= RECIP:
            for lane_i in range(lanes):
                out[o, lane_i] = _unary(act, a_arr[a_row, lane_i])
            _store_row(out[o], dt[s], bits)
        elif act == SEL:
            a_i, b_i = stream_src[s, 1], stream_src[s, 2]
            if a_i >= 0:
                t_arr, t_row = _row(alias, a_i, out, image)
            else:
                t_arr, t_row = zrow, 0
            if b_i >= 0:
                f_arr, f_row = _row(alias, b_i, out, image)
            else:
                f_arr, f_row = zrow, 0
            for lane_i in range(lanes):
                if a_arr[a_row, lane_i] != 0.0:
                    out[o, lane_i] = t_arr[t_row, lane_i]
                else:
                    out[o, lane_i] = f_arr[f_row, lane_i]
        elif act == CVT:
            if to[s] <= 2:  # to a float: to_dtype, without the f32 step of _store
                out[o, :] = a_arr[a_row]
                round_row(out[o], to[s], False, bits)
            else:
                for lane_i in range(lanes):
                    out[o, lane_i] = convert(a_arr[a_row, lane_i], to[s])
        elif act == IW:
            alias[s] = ZERO  # the rows are read where they live when a matmul uses them
        elif act == MM:
            w = weights[s]
            kk = k_i8 if dt[s] == I8 else k_f16
            integer = dt[s] == I8
            prev = acc_src[s]
            out[o, :] = 0.0
            if w >= 0:
                wi = iw_index[w]
                # out[o, n] = sum over q of x[q] * W[q, n], q ascending (the order of the reference),
                # row by row so the inner loop runs along contiguous lanes. Row q of the installed
                # weights is the value of the lw step that loaded it
                acc[:] = 0.0
                if a_src >= 0:
                    for q in range(min(kk, lanes - kof[s], rows)):
                        row = iw_rows[wi, q]
                        xq = a_arr[a_row, kof[s] + q]
                        if row >= 0:
                            w_arr, w_row = _row(alias, row, out, image)
                            wv = w_arr[w_row]
                            # an image row's lanes past its last nonzero one add zeros (or NaN
                            # when x is not finite: then every lane)
                            width = lanes
                            if alias[row] < 0 and xq - xq == 0.0:
                                width = image_width[w_row]
                            for n in range(width):
                                acc[n] += xq * wv[n]
                        elif xq - xq != 0.0:  # an unloaded row is zeros: inf or NaN times 0 is NaN
                            for n in range(lanes):
                                acc[n] += xq * 0.0
                out[o, :] = acc
            if not integer:  # f32 sums
                round_row(out[o], F32, True, bits)
            if mode[s] == 0:  # then the result dtype (i32 sums of i8)
                _store_row(out[o], I32 if integer else to[s], bits, False)
            elif mode[s] == 2 and prev >= 0:
                p_arr, p_row = _row(alias, prev, out, image)
                for n in range(lanes):
                    out[o, n] = p_arr[p_row, n] + out[o, n]
                _store_row(out[o], I32 if integer else F32, bits, False)
        elif act == ACC:
            m = acc_src[s]
            if m >= 0:
                m_arr, m_row = _row(alias, m, out, image)
                out[o, :] = m_arr[m_row]
                _store_row(out[o], to[s], bits)
            else:
                out[o, :] = 0.0
        elif act == SHIFT or act == ROT:
            for lane_i in range(lanes):
                src_lane = lane_i - k[s]
                if act == ROT:
                    src_lane = src_lane % lanes
                out[o, lane_i] = a_arr[a_row, src_lane] if 0 <= src_lane < lanes and a_src >= 0 else 0.0
        elif act == PERM:
            mi = mapi[s]
            length = map_run[mi, 2]
            if length >= 0:  # one run of lanes moved (a shift of a window), the rest zero
                out[o, :] = 0.0
                if a_src >= 0:
                    d0, s0 = map_run[mi, 0], map_run[mi, 1]
                    out[o, d0 : d0 + length] = a_arr[a_row, s0 : s0 + length]
            else:
                for lane_i in range(lanes):
                    from_lane = maps[mi, lane_i]
                    out[o, lane_i] = a_arr[a_row, from_lane] if from_lane >= 0 and a_src >= 0 else 0.0
        elif act == BCAST:
            out[o, :] = a_arr[a_row, lane[s]] if a_src >= 0 else 0.0
        elif act == LRED:
            if a_src >= 0:
                if red[s] == 0:
                    total = 0.0
                    for lane_i in range(lanes):
                        total += a_arr[a_row, lane_i]
                    v = _store(total, dt[s])
                else:
                    v = a_arr[a_row, 0]
                    for lane_i in range(1, lanes):
                        x = a_arr[a_row, lane_i]
                        if x > v or x != x:
                            v = x
                out[o, :] = v
            else:
                out[o, :] = 0.0
        elif act == TRANS:
            # A block's outputs need all 16 of its inputs: fill the block at its last step
            # (its consumers read from t + dfunc on, after every input has been sampled).
            # Output r, lane 16 g + c = input c, lane 16 g + r (16 x 16 per superlane).
            out[o, :] = 0.0
            b = trans_block[s]
            if b >= 0 and block_out[b, 15] == s:
                for r in range(16):
                    dst = block_out[b, r]
                    for c in range(16):
                        src = block_src[b, c]
                        if src >= 0:
                            i_arr, i_row = _row(alias, src, out, image)
                            for g in range(lanes // 16):
                                out[slot[dst], 16 * g + c] = i_arr[i_row, 16 * g + r]
                        else:
                            for g in range(lanes // 16):
                                out[slot[dst], 16 * g + c] = 0.0
        else:
            out[o, :] = 0.0
    for t in range(n_touched):  # everything in flight has landed when the program ends
        w = touched[t]
        if pend_land[w] > 0:
            prov[w] = pend_prov[w]
            pend_land[w] = 0
            pend_prov[w] = 0
    return out, alias, found, bad_address, n_touched


@numba.njit(cache=True)
def suspect_reads(reads, want, at, vector, words, unchecked, address_ok, is_image,  # per read
                  found, bad_address, ins, vec):  # fmt: skip
    """The reads (steps) that did not see what they must: `want` is the instruction whose vector
    `vector` a read must find, or else it may read any written word (`unchecked`), a word
    whose address was checked (`address_ok`) or the image word `at` (`is_image`; `words` maps
    image rows to their words). Steps with a bad address are reported on their own."""
    bad = np.empty(reads.shape[0], np.int64)
    n = 0
    for k in range(reads.shape[0]):
        s = reads[k]
        if bad_address[s]:
            continue
        m = found[s]
        if m != -1 and (unchecked[k] or address_ok[k]):
            continue
        if m >= 0 and want[k] >= 0 and ins[m] == want[k] and vec[m] == vector[k]:
            continue
        if m <= -2 and is_image[k] and -2 - m < words.shape[0] and words[-2 - m] == at[k]:
            continue
        bad[n] = s
        n += 1
    return bad[:n]


@numba.njit(cache=True)
def row_widths(rows, out, first: int, last: int) -> None:
    """out[r] for rows first .. last - 1: one past the row's last nonzero lane (0 for a row of
    zeros). A matrix pass needs a weight row's lanes only up to there: the products past it are
    zeros that change no sum."""
    for r in range(first, last):
        w = rows.shape[1]
        while w > 0 and rows[r, w - 1] == 0.0:
            w -= 1
        out[r] = w


@numba.njit(cache=True)
def as_placed(v, chunks: int, cols: int, dt: int) -> None:
    """A tensor's vectors as SRAM holds them, in the form placing its value makes (in place): each
    row's lanes past `cols` zero (a one-column tensor: lane 0 in every lane) and every value in its
    dtype. Rows are `chunks` vectors each."""
    lanes = v.shape[1]
    for r in range(v.shape[0] // chunks):
        for c in range(chunks):
            row = v[r * chunks + c]
            for lane_i in range(lanes):
                if cols == 1:
                    row[lane_i] = to_dtype(v[r * chunks, 0], dt)
                elif c * lanes + lane_i >= cols:
                    row[lane_i] = 0.0
                else:
                    row[lane_i] = to_dtype(row[lane_i], dt)


@numba.njit(cache=True)
def value_slots(action, mem_kind, stream_src, link_src, acc_src, weights, iw_index, iw_rows,
                trans_block, block_out, block_src, read_from, kept):  # fmt: skip
    """Where each step's value lives in `execute`'s value buffer: a row (a slot) that is free again
    once every step that may read the value has run, so that the buffer is a few rows deep
    instead of one 320-lane row per step (its rows then stay in the cache: one row per step made
    the kernel wait on memory). A step that only moves a vector (read, write, lw, send, recv,
    mov, gather, scatter) carries the value of the step that computed it; a value is read by the
    consumers of every step that carries it, and an SRAM read carries the write it is meant to
    see (`read_from`: that write's step, or -1 for a read of the image or of a word given at run
    time). Values written where `kept` says (a scatter, a slice read at a run-time address, the
    outputs and states read back after the run) live to the end. A step that reads a value it
    was not meant to see has already been reported (a violation); it may then find another value.
    Returns (slot per step, slots used); slot ZERO is never given out."""
    n = action.shape[0]
    root = np.full(n, -1, np.int64)  # the step that computed the value a step carries
    last = np.full(n, -1, np.int64)  # per computing step: the last step that may read its value
    for s in range(n):
        act = action[s]
        kind = mem_kind[s]
        if kind == 1 or kind == 3:
            w = read_from[s]
            root[s] = root[w] if w >= 0 else -1
        elif kind == 2 or kind == 4:
            d = stream_src[s, 0] if kind == 2 else stream_src[s, 1]
            root[s] = root[d] if d >= 0 else -1
            if kept[s] and root[s] >= 0:
                last[root[s]] = FOREVER
        elif act == LW or act == SEND or act == MOV:
            d = stream_src[s, 0]
            root[s] = root[d] if d >= 0 else -1
        elif act == RECV:
            d = link_src[s]
            root[s] = root[d] if d >= 0 else -1
        elif act == NOTHING or act == IW:
            root[s] = -1
        else:
            root[s] = s
            last[s] = max(last[s], s)
        for j in range(stream_src.shape[1]):
            x = stream_src[s, j]
            if x >= 0 and root[x] >= 0:
                last[root[x]] = max(last[root[x]], s)
        x = acc_src[s]
        if x >= 0 and root[x] >= 0:
            last[root[x]] = max(last[root[x]], s)
        if act == MM and weights[s] >= 0:
            wi = iw_index[weights[s]]
            for q in range(iw_rows.shape[1]):
                x = iw_rows[wi, q]
                if x >= 0 and root[x] >= 0:
                    last[root[x]] = max(last[root[x]], s)
        if act == TRANS:
            b = trans_block[s]
            if b >= 0 and block_out[b, 15] == s:  # the block is computed at its last step
                for c in range(16):
                    x = block_src[b, c]
                    if x >= 0 and root[x] >= 0:
                        last[root[x]] = max(last[root[x]], s)
                for r in range(16):
                    x = block_out[b, r]
                    if x >= 0:
                        last[x] = max(last[x], s)
    # give out slots in step order; a slot is free again after its value's last reader
    slot = np.full(n, ZERO, np.int64)
    head = np.full(n + 1, -1, np.int64)  # per step: the first value whose slot frees there
    nxt = np.full(n, -1, np.int64)
    free = np.empty(n + 1, np.int64)
    n_free = 0
    used = 1
    for s in range(n):
        x = head[s]
        while x >= 0:
            free[n_free] = slot[x]
            n_free += 1
            x = nxt[x]
        if root[s] != s:
            continue
        if n_free > 0:
            n_free -= 1
            slot[s] = free[n_free]
        else:
            slot[s] = used
            used += 1
        if last[s] < n - 1:
            at = last[s] + 1
            nxt[s] = head[at]
            head[at] = s
    return slot, used

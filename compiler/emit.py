"""From placed jobs to a program: SRAM words, instruction rows and their intended sources.

SRAM: inputs, params, constants and outputs are pinned; every other tensor gets
words only for its lifetime (from its first write to its last read), packed
first-fit per MEM slice, so activations reuse words. A model that does not fit
is an error that says how many bytes are missing.

Intended sources: every instruction records which instruction produced each
vector it reads. A read that spans vectors written by different instructions is
split at those boundaries into pieces issued back to back on its queue (vector i
of an instruction always moves at issue + i, so splitting changes no timing);
what its vectors flow into stays one instruction and names the first piece.
"""

from __future__ import annotations

import array
from bisect import bisect_right

import numpy as np

from compiler.jobs import Job
from compiler.lower import Tensor
from compiler.schedule import Placed
from isa.chip import ChipConfig
from isa.diagnostics import error
from isa.program import ADDRESS, IMAGE, MAX_FIELDS, MAX_SOURCES, NONE, UNCHECKED, source_slots
from isa.spec import BY_MNEMONIC, DTYPE_BYTES

_WIDTH = 6 + MAX_FIELDS + 3 * MAX_SOURCES  # ints per row in the emitter's buffer
_FLUSH = _WIDTH << 18  # rows kept as Python ints before they become an array block
_LAYOUT: dict[str, tuple] = {}  # mnemonic -> (opcode, fields in ISA order, source slots, output field)
_NO_SOURCE = [NONE, 0, 1]
_CUT = ("read", "write")  # what may be cut into pieces


def lifetimes(jobs: list[Job], placed: list[Placed], tensors: list[Tensor]) -> dict[int, tuple[int, int]]:
    span: dict[int, list[int]] = {}
    for job, pl in zip(jobs, placed):
        for nd in job.nodes:
            if nd.mem is None:
                continue
            t_id = nd.mem[0]
            s = pl.start + nd.rel
            e = s + nd.spec.dskew + nd.n + nd.spec.dfunc
            cur = span.setdefault(t_id, [s, e])
            cur[0], cur[1] = min(cur[0], s), max(cur[1], e)
    return {k: (v[0], v[1]) for k, v in span.items()}


class Allocator:
    """First-fit word allocation per MEM slice over time intervals."""

    def __init__(self, chip: ChipConfig):
        self.chip = chip
        # (chip, slice) -> (word0, word1, t0, t1)
        self.used: dict[tuple[int, str], list[tuple[int, int, int, int]]] = {}
        self.high: dict[tuple[int, str], int] = {}

    def place(self, slice_name: str, words: int, t0: int, t1: int, chip: int = 0) -> int:
        key = (chip, slice_name)
        blocks = sorted(self.used.get(key, []))
        live = [(a, b) for a, b, s, e in blocks if s < t1 and t0 < e]
        addr = 0
        for a, b in sorted(live):
            if addr + words <= a:
                break
            addr = max(addr, b)
        self.used.setdefault(key, []).append((addr, addr + words, t0, t1))
        self.high[key] = max(self.high.get(key, 0), addr + words)
        return addr

    def check(self) -> None:
        limit = self.chip.words_per_slice
        over = {s: h - limit for s, h in self.high.items() if h > limit}
        if over:
            missing = sum(over.values()) * self.chip.word_bytes
            total = sum(self.high.values()) * self.chip.word_bytes
            chips = -(-total // self.chip.sram_bytes)
            many = len({c for c, _ in self.high}) > 1
            names = sorted(f"chip {c} {s}" if many else s for c, s in over)
            if len(names) > 6:  # name the first few: a 400-slice list helps nobody
                names = names[:6] + [f"{len(names) - 6} more"]
            raise error(
                f"the model does not fit in SRAM: {missing} more bytes are needed in "
                f"{len(over)} MEM slice{'s' if len(over) != 1 else ''} ({', '.join(names)}); "
                f"in total it needs {total} bytes, about {chips} chip{'s' if chips != 1 else ''} of "
                f"{self.chip.sram_bytes} bytes"
            )

    def bytes_per_chip(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for (c, _), h in self.high.items():
            out[c] = out.get(c, 0) + h * self.chip.word_bytes
        return out


class Emitter:
    def __init__(self, chip: ChipConfig, tensors: list[Tensor], base: dict[int, int]):
        self.chip = chip
        self.tensors = tensors
        self.base = base  # tensor id -> first word
        # the instruction table, a row after another: entry, chip, queue, cycle, opcode, n, the fields
        # in ISA order, then (source, offset, step) per source slot (flat ints: 17M rows fit in memory)
        self.buf = array.array("q")
        self.blocks: list[np.ndarray] = []  # full buffers, as arrays (a deep pipeline has tens of millions)
        self.n_rows = 0
        self.ops: dict[tuple[str, str], int] = {}  # (op text, IR location) -> index
        self.row_op = array.array("q")  # per row, the index of the op it comes from
        # tensor id -> per vector: (instruction row, its vector index), or None for image data
        self.writer: dict[int, list[tuple[int, int] | None]] = {}
        self.n_dynamic: dict[int, int] = {}  # per tensor: how many of its vectors a scatter may hold
        self._starts: dict[int, list[int]] = {}  # per node of the job being emitted: its pieces' starts

    def new_entry(self) -> None:
        """Each run starts from the image: inputs, params and states placed anew, nothing written."""
        self.writer = {}
        self.n_dynamic = {}

    def word(self, t: Tensor, vector: int) -> int:
        return self.base[t.id] + vector * DTYPE_BYTES[t.dtype]

    def _dynamic(self, t: Tensor) -> bool:
        """Whether a scatter may have written the tensor: its reads then have no single source."""
        return self.n_dynamic.get(t.id, 0) > 0

    def _cuts(self, nd) -> list[int]:
        """Where a read or write is cut into instructions (vector indices within it): at the starts
        of its runs of vectors, and for a read also where its vectors' writer changes."""
        cuts = [] if nd.segments is None else [s for s, _, _ in nd.segments[1:]]
        if nd.mnemonic != "read":
            return cuts
        t_id, first, step = nd.mem
        t = self.tensors[t_id]
        if t.kind != "temp" or self._dynamic(t):
            return cuts
        if nd.segments is not None:
            vectors = nd.vectors().tolist()
        else:
            vectors = range(first, first + step * nd.n, step) if step else [first] * nd.n
        w = self.writer.get(t_id)
        starts = set(cuts)
        prev = None if w is None else w[vectors[0]]
        stride = None
        for i in range(1, nd.n):
            cur = None if w is None else w[vectors[i]]
            ok = prev is not None and cur is not None and cur[0] == prev[0] and i not in starts
            if ok:
                d = cur[1] - prev[1]
                if stride is None:
                    stride = d
                ok = d == stride and stride >= 0
            if not ok:
                if i not in starts:
                    cuts.append(i)
                stride = None
            prev = cur
        return sorted(cuts)

    def emit(self, job: Job, placed: Placed, entry: int) -> None:
        key = (job.name, job.loc)
        origin = self.ops.setdefault(key, len(self.ops))  # the IR op each instruction comes from
        # rows of each node's pieces: node -> {first vector of the piece: row index}
        pieces: list[dict[int, int]] = []
        self._starts = {}
        rows_before = self.n_rows
        for k, nd in enumerate(job.nodes):
            # only a read is cut (where its vectors' writer changes); what its vectors flow into stays
            # one instruction, naming the first piece: vector i past a piece's end is vector i - n of
            # the next piece, issued right after on the same queue (isa/program.py)
            cut = self._cuts(nd) if nd.mnemonic in _CUT and not nd.dynamic else None
            if not cut:
                pieces.append({0: self.n_rows})
                self._row(nd, k, 0, nd.n, placed, entry, pieces)
                self.n_rows += 1
                continue
            bounds = [0, *cut, nd.n]
            at: dict[int, int] = {}
            pieces.append(at)
            for s, e in zip(bounds[:-1], bounds[1:]):
                at[s] = self.n_rows
                self._row(nd, k, s, e, placed, entry, pieces)
                self.n_rows += 1
        self.row_op.extend([origin] * (self.n_rows - rows_before))
        if len(self.buf) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if len(self.buf):
            self.blocks.append(np.frombuffer(self.buf, np.int64).reshape(-1, _WIDTH))
            self.buf = array.array("q")

    def _row(self, nd, k: int, s: int, e: int, placed: Placed, entry: int, pieces) -> None:
        """The row of node k's piece of vectors s .. e."""
        layout = _LAYOUT.get(nd.mnemonic)
        if layout is None:
            spec = BY_MNEMONIC[nd.mnemonic]
            pad = [0] * (MAX_FIELDS - len(spec.operands))
            slots = source_slots(spec)
            no_source = _NO_SOURCE * (MAX_SOURCES - len(slots))
            layout = _LAYOUT[nd.mnemonic] = (spec.code, spec.operands, slots, spec.output, pad, no_source)
        code, operands, slots, output, pad, no_source = layout
        fields = nd.fields.copy()
        sources: dict[str, tuple[int, int, int]] = {}
        streams = placed.streams
        for name, p in nd.inputs:
            fields[name] = streams[p]
            at = pieces[p]
            row = at.get(s)
            if row is not None:
                sources[name] = (row, 0, 1)
            else:  # the producer's piece holding vector s (a write cut where a unit's result is not)
                starts = self._starts.get(p)
                if starts is None:  # the producer's pieces are all emitted: their starts, in order
                    starts = self._starts[p] = list(at)
                first = starts[bisect_right(starts, s) - 1]
                sources[name] = (at[first], s - first, 1)
        if output:
            # 0: a result nothing in the job reads (never the case for our jobs)
            fields[output] = streams.get(k, 0)
        if s:
            if "row" in fields:
                fields["row"] += s
            if "slot" in fields:
                fields["slot"] += s
        mem = nd.mem
        if mem is not None:
            t_id, first, step = mem
            t = self.tensors[t_id]
            if nd.dynamic:
                # the gather / scatter adds the run-time row; a piece starting at vector s starts s vectors on
                fields["addr"] = self.word(t, first) + s * t.width
                if nd.mnemonic == "gather":
                    sources["mem"] = (UNCHECKED, 0, 1)
                else:
                    self.writer.setdefault(t_id, [None] * t.vectors)[:] = ["dynamic"] * t.vectors
                    self.n_dynamic[t_id] = t.vectors
            else:
                if nd.segments is not None:
                    # the run holding vector s: vector i of the node is `first + step * i` in it
                    s0, f0, step = nd.segment(s)
                    first, fields["step"] = f0 - step * s0, step * t.width
                addr = fields["addr"] = self.base[t_id] + (first + step * s) * DTYPE_BYTES[t.dtype]
                if nd.mnemonic == "read":
                    if self.n_dynamic.get(t_id, 0) > 0:
                        sources["mem"] = (ADDRESS, addr, 1)
                    else:
                        w = self.writer.get(t_id)
                        src = None if w is None else w[first + step * s]
                        if src is None:
                            sources["mem"] = (IMAGE, addr, 1)
                        else:
                            nxt = w[first + step * (s + 1)] if e - s > 1 else None
                            stride = (nxt[1] - src[1]) if nxt is not None else 1
                            sources["mem"] = (src[0], src[1], stride)
                else:
                    w = self.writer.setdefault(t_id, [None] * t.vectors)
                    row_index = self.n_rows
                    if step > 0 and not self.n_dynamic.get(t_id):  # evenly spaced, no scatter's words
                        w[first + step * s : first + step * (e - 1) + 1 : step] = [
                            (row_index, i) for i in range(e - s)
                        ]
                    else:
                        for i in range(s, e):
                            v = first + step * i
                            if w[v] == "dynamic":
                                self.n_dynamic[t_id] -= 1
                            w[v] = (row_index, i - s)
        implicit = nd.sources
        if implicit:
            for slot in ("w", "link"):  # the weight install a pass uses; the send a receive takes
                if slot in implicit:
                    sources[slot] = (pieces[implicit[slot]][0], 0, 1)
            if "acc" in implicit:
                sources["acc"] = (pieces[implicit["acc"]][s], 0, 1)
        row = [entry, nd.chip, nd.queue, placed.start + nd.rel + s, code, e - s]
        row += [fields[name] for name in operands]
        row += pad
        for slot in slots:
            row += sources.get(slot, _NO_SOURCE)
        row += no_source
        self.buf.extend(row)

    def tables(self):
        """The instruction table columns (program order = emission order), filled block by block so
        that the rows are never held twice."""
        self._flush()
        n = self.n_rows
        f0, s0 = 6, 6 + MAX_FIELDS
        entry, chip, queue, opcode, count = (np.empty(n, np.int32) for _ in range(5))
        cycle = np.empty(n, np.int64)
        fields = np.empty((n, MAX_FIELDS), np.int64)
        src, off, stp = (np.empty((n, MAX_SOURCES), np.int64) for _ in range(3))
        at = 0
        while self.blocks:
            t = self.blocks.pop(0)
            rows = slice(at, at + len(t))
            entry[rows], chip[rows], queue[rows] = t[:, 0], t[:, 1], t[:, 2]
            cycle[rows], opcode[rows], count[rows] = t[:, 3], t[:, 4], t[:, 5]
            fields[rows] = t[:, f0:s0]
            sources = t[:, s0:].reshape(len(t), MAX_SOURCES, 3)
            src[rows], off[rows], stp[rows] = sources[:, :, 0], sources[:, :, 1], sources[:, :, 2]
            at += len(t)
        return entry, chip, queue, cycle, opcode, count, fields, src, off, stp

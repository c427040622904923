"""Places jobs on the clock: critical-path-priority list scheduling with reservation tables.

A job's instructions keep their relative cycles (compiler/jobs.py); the scheduler
picks each job's start cycle, the earliest at which

- every vector it reads has landed in SRAM (the writes of earlier jobs),
- none of its instructions overlaps another on the same queue (queue occupancy
  from the ISA table; a MEM slice's queue is also its one port),
- every stream it needs is free along its whole path in space-time, and
- what its instructions hold beyond their queues is free while they hold it (a
  send its link direction; a matrix block its plane's shadow buffer, array and
  accumulators, each from its first use to its last).

Streams: a vector written at position p on cycle c heading east is at q >= p on
cycle c + (q - p). In coordinates (diagonal d = c - u, u = x east or -x west) a
transfer of n vectors from u0 to u1 occupies the rectangle [d0, d0 + n) x [u0, u1];
two transfers on one stream conflict exactly when their rectangles overlap.
Everything is deterministic: ties break by job order, streams are tried lowest first.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from compiler.jobs import Job
from compiler.lower import Tensor
from isa.chip import ChipConfig
from isa.diagnostics import error

_BUCKET = 64
WRITES = ("write", "scatter")
READY = ("param", "const")  # tensors whose every vector is in place at cycle 0 of every run


@dataclass
class Placed:
    start: int
    streams: dict[int, int] = field(default_factory=dict)  # producer node -> stream field value


class _Intervals:
    """Disjoint busy intervals [start, end), sorted."""

    def __init__(self):
        self.starts: list[int] = []
        self.ends: list[int] = []

    def first_fit(self, start: int, length: int) -> int:
        """The earliest t >= start with [t, t + length) free."""
        k = bisect.bisect_left(self.ends, start + 1)
        t = start
        while k < len(self.starts) and self.starts[k] < t + length:
            t = max(t, self.ends[k])
            k += 1
        return t

    def add(self, start: int, end: int) -> None:
        """Reserve [start, end) (free, as the search found); touching intervals merge into one, so a
        queue kept busy back to back is one interval and a first fit does not walk its pieces."""
        starts, ends = self.starts, self.ends
        k = bisect.bisect_left(starts, start)
        before = k > 0 and ends[k - 1] == start
        after = k < len(starts) and starts[k] == end
        if before and after:
            ends[k - 1] = ends[k]
            del starts[k], ends[k]
        elif before:
            ends[k - 1] = end
        elif after:
            starts[k] = start
        else:
            starts.insert(k, start)
            ends.insert(k, end)


class _Streams:
    """Stream rectangles per (chip, direction, stream), bucketed by diagonal."""

    def __init__(self):
        self.buckets: dict[tuple, list[tuple[int, int, int, int]]] = {}
        self.by_key: dict[tuple, list[tuple[int, int, int, int]]] = {}

    def add(self, key, d0, d1, u0, u1) -> None:
        for b in range(d0 // _BUCKET, d1 // _BUCKET + 1):
            self.buckets.setdefault((*key, b), []).append((d0, d1, u0, u1))
        self.by_key.setdefault(key, []).append((d0, d1, u0, u1))


def transfers(job: Job) -> list[tuple[int, list[int]]]:
    """(producer node, its consumer nodes) for every node whose output feeds the job."""
    consumers: dict[int, list[int]] = {}
    for k, nd in enumerate(job.nodes):
        for _, p in nd.inputs:
            if k not in consumers.setdefault(p, []):
                consumers[p].append(k)
    return sorted(consumers.items())


class Scheduler:
    def __init__(self, chip: ChipConfig, tensors: list[Tensor]):
        self.chip = chip
        self.S = chip.streams_per_direction
        self.tensors = tensors
        self.queues: dict[int, _Intervals] = {}
        self.streams = _Streams()
        self.streams_of_chip: dict[int, set[tuple]] = {}  # the streams a chip has rectangles on
        # when a list: every change `_commit` makes to the tables, in order (StageMemo replays them)
        self.log: list | None = None
        for t in tensors:
            if t.kind in READY:  # in SRAM before the run and never written: nothing to track
                continue
            if t.landing is None:
                t.landing = np.full(t.vectors, 0 if t.kind != "temp" else -1, np.int64)
            if t.kind == "state":
                t.last_read = np.full(t.vectors, -1, np.int64)

    def data_ready(self, job: Job) -> int:
        start = 0
        tensors = self.tensors
        for nd in job.nodes:
            if nd.mem is None:
                continue
            t_id, first, step = nd.mem
            t = tensors[t_id]
            if t.kind in READY:
                continue
            if nd.dynamic:  # any word of the tensor: all of it must have landed before the first access
                assert (t.landing >= 0).all(), f"{job.name}: addresses a tensor nothing has written"
                start = max(start, int(t.landing.max()) - (nd.rel + nd.spec.dskew))
                if nd.mnemonic == "scatter" and t.last_read is not None:
                    start = max(start, int(t.last_read.max()) + 1 - (nd.rel + nd.spec.dfunc))
                continue
            if nd.mnemonic == "read":
                land = _at(t.landing, nd)
                assert land.min() >= 0, f"{job.name}: reads a vector nothing has written"
                # vector i is sampled i cycles after the first
                start = max(start, int((land - _ramp(nd.n)).max()) - (nd.rel + nd.spec.dskew))
            elif nd.mnemonic == "write" and t.last_read is not None:
                # a state's new value lands only after every read of its old value
                need = _at(t.last_read, nd) + 1 - _ramp(nd.n)
                start = max(start, int(need.max()) - (nd.rel + nd.spec.dfunc))
        return start

    def _reservations(self, job: Job) -> list[tuple[tuple, int, int]]:
        """Every reservation the job makes as (key, offset from its start, cycles): its instructions'
        queues and holds; lengthless ones hold nothing."""
        out = []
        for nd in job.nodes:
            busy = nd.spec.busy_cycles(nd.n)
            if busy > 0:
                out.append(((nd.chip, nd.queue), nd.rel, busy))
            for key, off, length in nd.holds:
                if length > 0:
                    out.append((key, nd.rel + off, length))
        return out

    def place(self, job: Job, earliest: int = 0) -> Placed:
        start = max(earliest, self.data_ready(job))
        flows = self._flow_rects(job)
        feasible = False  # checked (against no other job) the first time the streams do not fit
        held = self._reservations(job)
        # only reservations of resources someone already holds can conflict (the tables do not change
        # during the search); each as (starts, ends, offset, cycles)
        busy = []
        queues = self.queues
        for key, off, length in held:
            iv = queues.get(key)
            if iv is not None:
                busy.append((iv.starts, iv.ends, off, length))
        bisect_left = bisect.bisect_left
        while True:
            moved = False
            for starts, ends, off, length in busy:  # move to the first fit of each in turn until all fit
                t = start + off
                k = bisect_left(ends, t + 1)
                if k < len(starts) and starts[k] < t + length:  # a conflict: the first fit after it
                    while k < len(starts) and starts[k] < t + length:
                        t = max(t, ends[k])
                        k += 1
                    start, moved = t - off, True
            if moved:
                continue
            streams = self._streams(job, flows, start)
            if streams is None:
                if not feasible:
                    if self._streams(job, flows, start, _Streams()) is None:
                        raise error(
                            f"{job.name}: one step of this op needs more streams flowing the same way at "
                            f"once than a {self.chip.name} chip has ({self.S} per direction)"
                        )
                    feasible = True
                start += 1
                continue
            break
        self._commit(job, start, streams, flows, held)
        return Placed(start, streams)

    def _flow_rects(self, job: Job) -> list[tuple[int, int, list]]:
        """Each transfer (producer node to its consumers, `transfers`) with the rectangles it may use
        for a job starting at cycle 0 (they move along the diagonal with the start): east or west
        towards its consumers, either one when producer and consumers share a position. Transfers
        that may flow either way go last, into whatever is left."""
        nodes = job.nodes
        out = []
        for p, consumers in transfers(job):
            pn = nodes[p]
            px = pn.x
            xs = [nodes[c].x for c in consumers]
            lo, hi = min(xs), max(xs)
            assert lo >= px or hi <= px, f"{job.name}: consumers on both sides of a producer"
            emit = pn.rel + pn.spec.dfunc
            last = pn.n - 1
            rects = []
            if lo >= px:  # east: u = x
                rects.append((0, emit - px, emit - px + last, px, hi))
            if hi <= px:  # west: u = -x
                rects.append((1, emit + px, emit + px + last, -px, -lo))
            out.append((p, pn.chip, rects))
        return sorted(out, key=lambda f: len(f[2]))

    def _streams(self, job: Job, flows, start: int, table: _Streams | None = None) -> dict[int, int] | None:
        """A stream for each transfer (`flows` from `_flow_rects`), lowest free first, or None."""
        table = self.streams if table is None else table
        buckets = table.buckets
        S = self.S
        chosen: dict[int, int] = {}
        taken: dict[tuple, list[tuple[int, int, int, int]]] = {}  # this job's own, by stream
        for producer, chip, rects in flows:
            found = None
            for direction, d0, d1, u0, u1 in rects:
                d0, d1 = d0 + start, d1 + start
                b0, b1 = d0 // _BUCKET, d1 // _BUCKET + 1
                for sid in range(S):
                    free = True  # no rectangle of the stream overlaps (the scheduler's innermost loop)
                    for b in range(b0, b1):
                        for e0, e1, v0, v1 in buckets.get((chip, direction, sid, b), ()):
                            if e0 <= d1 and d0 <= e1 and v0 <= u1 and u0 <= v1:
                                free = False
                                break
                        if not free:
                            break
                    if not free:
                        continue
                    key = (chip, direction, sid)
                    mine = taken.get(key)
                    if mine and any(
                        e0 <= d1 and d0 <= e1 and v0 <= u1 and u0 <= v1 for e0, e1, v0, v1 in mine
                    ):
                        continue
                    found = (key, d0, d1, u0, u1)
                    break
                if found:
                    break
            if found is None:
                return None
            chosen[producer] = found[0][1] * S + found[0][2]
            taken.setdefault(found[0], []).append(found[1:])
        return chosen

    def _commit(self, job: Job, start: int, streams, flows, held) -> None:
        log = self.log
        queues = self.queues
        for key, off, length in held:
            iv = queues.get(key)
            if iv is None:
                iv = queues[key] = _Intervals()
            iv.add(start + off, start + off + length)
            if log is not None:
                log.append((HOLD, key, start + off, length))
        for producer, chip, rects in flows:
            direction, sid = divmod(streams[producer], self.S)
            key = (chip, direction, sid)
            for rect in rects:
                if rect[0] == direction:
                    self.streams.add(key, rect[1] + start, rect[2] + start, *rect[3:])
                    if log is not None:
                        log.append((STREAM, key, rect[1] + start, rect[2] + start, *rect[3:]))
            self.streams_of_chip.setdefault(chip, set()).add(key)
        for nd in job.nodes:
            if nd.mem is None:
                continue
            t = self.tensors[nd.mem[0]]
            if nd.mnemonic == "write":
                lands = start + nd.rel + nd.spec.dfunc + _ramp(nd.n)
                _put(t.landing, nd, lands)
                if log is not None:
                    log.append((_LAND, t.id, nd.vectors(), lands))
            elif nd.mnemonic == "scatter":
                last = start + nd.rel + nd.spec.dfunc + nd.n - 1
                t.landing[:] = np.maximum(t.landing, last)
                if log is not None:
                    log.append((_LAND_ALL, t.id, None, last))
            elif t.last_read is not None:  # reads of a state: remember the last one per vector
                if nd.dynamic:
                    last = start + nd.rel + nd.spec.dskew + nd.n - 1
                    t.last_read[:] = np.maximum(t.last_read, last)
                    if log is not None:
                        log.append((_READ_ALL, t.id, None, last))
                else:
                    samples = start + nd.rel + nd.spec.dskew + _ramp(nd.n)
                    _put(t.last_read, nd, np.maximum(_at(t.last_read, nd), samples))
                    if log is not None:
                        log.append((_READ, t.id, nd.vectors(), samples))

    def replay(self, log: list, shift: int) -> None:
        """Apply what `_commit` logged (`log`, raw keys and tensor ids), `shift` cycles later: the
        same table changes, in the same order, as committing the jobs that made it so shifted."""
        queues, tensors = self.queues, self.tensors
        add_rect = self.streams.add
        for what, key, *rest in log:
            if what == HOLD:  # a reservation of a queue or of what an instruction holds
                iv = queues.get(key)
                if iv is None:
                    iv = queues[key] = _Intervals()
                s0 = rest[0] + shift
                iv.add(s0, s0 + rest[1])
            elif what == STREAM:
                d0, d1, u0, u1 = rest
                add_rect(key, d0 + shift, d1 + shift, u0, u1)
                self.streams_of_chip.setdefault(key[0], set()).add(key)
            else:
                t = tensors[key]
                index, value = rest
                if what == _LAND:
                    t.landing[index] = value + shift
                elif what == _LAND_ALL:
                    t.landing[:] = np.maximum(t.landing, value + shift)
                elif what == _READ:
                    t.last_read[index] = np.maximum(t.last_read[index], value + shift)
                else:
                    t.last_read[:] = np.maximum(t.last_read, value + shift)


# what `Scheduler.log` holds: reservations, stream rectangles, landings and last reads
HOLD, STREAM, _LAND, _LAND_ALL, _READ, _READ_ALL = range(6)


_RAMP = np.arange(1 << 12, dtype=np.int64)


def _ramp(n: int) -> np.ndarray:
    """0, 1, .., n - 1 (a view of one array for the usual lengths)."""
    return _RAMP[:n] if n <= len(_RAMP) else np.arange(n, dtype=np.int64)


def _at(per_vector: np.ndarray, nd) -> np.ndarray:
    """The entries of a per-vector array for the vectors a (non-dynamic) read or write touches, in
    order (a strided view when they are one run)."""
    _, first, step = nd.mem
    if nd.segments is None and step > 0:
        return per_vector[first : first + step * (nd.n - 1) + 1 : step]
    return per_vector[nd.vectors()]


def _put(per_vector: np.ndarray, nd, values: np.ndarray) -> None:
    """Set the entries `_at` reads (for a vector touched twice, the last value stays)."""
    _, first, step = nd.mem
    if nd.segments is None and step > 0:
        per_vector[first : first + step * (nd.n - 1) + 1 : step] = values
    else:
        per_vector[nd.vectors()] = values


def critical_path_order(
    jobs: list[Job], tensors: list[Tensor], stage_of_chip: dict[int, int] | None = None
) -> tuple[list[int], list[int], list[set[int]]]:
    """Jobs in list-scheduling order, the pipeline stage of each and the jobs each waits for: stage
    by stage, and within a stage, among jobs whose inputs are produced, the longest path (through
    the stage) first.

    A job waits for the jobs that write what it reads (a scatter may write any vector of its
    tensor); a write into a state waits for every job that reads the state's old value. A job's
    stage is the latest stage of the chips it runs on and of the jobs it waits for, so each stage's
    jobs come as one block after the blocks of the stages it depends on.
    """
    # per tensor, per vector: the jobs that write it (and, for a state, that read its old value)
    writers: dict[int, list[tuple[int, ...] | None]] = {}
    readers: dict[int, list[tuple[int, ...] | None]] = {}

    def where(nd) -> slice | list[int]:
        """The vectors a node touches, as a slice of a per-vector list when they are evenly spaced
        (each at most once)."""
        _, first, step = nd.mem
        if nd.dynamic:
            return slice(None)
        if nd.segments is not None:
            return nd.vectors().tolist()
        if step > 0:
            return slice(first, first + step * (nd.n - 1) + 1, step)
        return slice(first, first + 1) if step == 0 else list(range(first, first + step * nd.n, step))

    def entries(per: list, at: slice | list[int]) -> list:
        return per[at] if isinstance(at, slice) else [per[v] for v in at]

    # only what some job writes can order jobs: reads of params and constants (most vectors a
    # layer reads) are not looked at, and readers matter only for states (written after them)
    written = {nd.mem[0] for job in jobs for nd in job.nodes if nd.mem is not None and nd.mnemonic in WRITES}
    for j, job in enumerate(jobs):
        for nd in job.nodes:
            if nd.mem is None or nd.mem[0] not in written:
                continue
            if nd.mnemonic in WRITES:
                table = writers
            elif tensors[nd.mem[0]].kind == "state":
                table = readers
            else:
                continue
            t_id = nd.mem[0]
            per = table.get(t_id)
            if per is None:
                per = table[t_id] = [None] * tensors[t_id].vectors
            at = where(nd)
            if isinstance(at, slice):
                here = per[at]
                if here.count(None) == len(here):  # written first here: all share one tuple
                    per[at] = [(j,)] * len(here)
                    continue
                at = range(*at.indices(len(per)))
            made: dict = {}  # vectors with the same writers so far share one tuple (reads skip repeats)
            for v in at:
                old = per[v]
                if old is None or old[-1] != j:
                    new = made.get(old)
                    if new is None:
                        new = made[old] = (j,) if old is None else (*old, j)
                    per[v] = new
    deps: list[set[int]] = []
    for j, job in enumerate(jobs):
        d = set()
        for nd in job.nodes:
            if nd.mem is None or nd.mem[0] not in written:
                continue
            reads = nd.mnemonic in ("read", "gather", "scatter")
            waits = nd.mnemonic == "write" and tensors[nd.mem[0]].kind == "state"
            if not (reads or waits):
                continue
            t_id = nd.mem[0]
            for per in (writers.get(t_id) if reads else None, readers.get(t_id) if waits else None):
                if per is None:
                    continue
                for ws in set(entries(per, where(nd))):  # vectors with the same writers share a tuple
                    if ws is not None:
                        d.update(ws)
        d = {w for w in d if w < j}
        deps.append(d)
    stage = [0] * len(jobs)
    if stage_of_chip:
        for j, job in enumerate(jobs):  # lowering order is topological
            own = max((stage_of_chip.get(nd.chip, 0) for nd in job.nodes), default=0)
            stage[j] = max([own] + [stage[w] for w in deps[j]])
    users: list[list[int]] = [[] for _ in jobs]
    for j, d in enumerate(deps):
        for w in d:
            users[w].append(j)
    length = [0] * len(jobs)
    for j in reversed(range(len(jobs))):
        lo, hi = jobs[j].span()
        length[j] = (hi - lo) + max((length[u] for u in users[j] if stage[u] == stage[j]), default=0)
    import heapq

    waiting = [len(d) for d in deps]
    ready = [(stage[j], -length[j], j) for j in range(len(jobs)) if waiting[j] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, j = heapq.heappop(ready)
        order.append(j)
        for u in users[j]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, (stage[u], -length[u], u))
    assert len(order) == len(jobs), "the job graph has a cycle"
    return order, stage, deps

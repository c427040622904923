"""Schedules each kind of pipeline stage once: the symmetry a timing-only compile exploits.

The scheduler places jobs stage by stage (compiler/schedule.critical_path_order), and
every job of stage s starts no earlier than the stage's *release*: the first cycle at
which anything from an earlier stage can be used in it. So the placement of a stage's
block of jobs is a function of

- the jobs themselves (their instructions, queues, positions, relative cycles, the
  tensors they read and write, the links they hold),
- the reservations already made, on the chips those jobs touch, that end after the
  release (queues, links, matrix planes, stream rectangles), and
- when the vectors the block reads from outside it landed (and, for a state, when its
  old value was last read), relative to the release,

and nothing else: the list scheduler's search looks at nothing more. Two blocks that
are equal in all of these once chips, tensors and links are renamed in order of first
use and times are taken relative to the release are placed identically, shifted by
the difference of their releases. `StageMemo` computes that canonical form as a key;
the second block with a known key is not searched but committed at the shifted cycles.
This is exact by construction (tests compare with scheduling every stage), and it is
what makes the repeated layers of a deep pipeline cheap: stages holding the same
number of layers, with hand-offs over alike links, are searched once.
"""

from __future__ import annotations

import bisect
import hashlib
import marshal

import numpy as np

from compiler.jobs import Job
from compiler.schedule import HOLD, READY, STREAM, Placed, Scheduler


def release_of(
    sched: Scheduler, jobs: list[Job], block: list[int], deps: list[set[int]], earlier: set[int]
) -> int:
    """The first cycle anything from an earlier stage can be used in this block: the earliest data
    readiness of its jobs that wait only for jobs of earlier blocks (and for at least one)."""
    ready = [sched.data_ready(jobs[j]) for j in block if deps[j] and deps[j] <= earlier]
    return min(ready, default=0)


class StageMemo:
    """Placements of blocks already searched, by canonical key."""

    def __init__(self):
        # per key: each job's start (relative to the release) and streams, and the table changes its
        # commits made (canonical once a block equal to it came: `_renamed`)
        self.known: dict[bytes, list] = {}
        self.hits = 0
        self.misses = 0
        self.last_key: bytes | None = None  # the key of the block placed last (None when not looked up)
        self._names: tuple = ({}, {}, {})  # the last key's renaming: chips, queues (and holds), tensors

    def key(self, sched: Scheduler, jobs: list[Job], block: list[int], release: int) -> bytes:
        """The block's canonical form: chips, queues, links and tensors renamed in order of first use,
        times relative to the release; only the resources the block uses are looked at (no other
        reservation can move it). Queues are renamed, not kept: two queues at the same position are
        interchangeable (a hand-off leaves over link 3 of one chip and link 4 of the next)."""
        chips: dict[int, int] = {}
        queues: dict[tuple, int] = {}
        tensors: dict[int, int] = {}
        links: dict[int, int] = {}
        used: dict[tuple, tuple] = {}  # raw reservation key -> canonical
        flow_chips: dict[int, None] = {}

        def chip_of(c: int) -> int:
            return chips.setdefault(c, len(chips))

        def queue(key: tuple) -> tuple:
            if key not in used:
                if key[0] == "link":
                    used[key] = ("link", links.setdefault(key[1], len(links)), chip_of(key[2]))
                else:
                    used[key] = ("q", chip_of(key[0]), queues.setdefault(key, len(queues)))
            return used[key]

        out: list = []
        for j in block:
            job = jobs[j]
            nodes = []
            job_nodes = job.nodes
            for nd in job_nodes:
                mem = None
                if nd.mem is not None:
                    t_id, first, step = nd.mem
                    t = tensors.get(t_id)
                    if t is None:
                        t = tensors[t_id] = len(tensors)
                    mem = (t, first, step, nd.segments)
                inputs = ()
                if nd.inputs:
                    inputs = tuple([p for _, p in nd.inputs])
                    for p in inputs:
                        flow_chips.setdefault(job_nodes[p].chip, None)
                key = (nd.chip, nd.queue)
                q = used.get(key)
                if q is None:
                    q = queue(key)
                holds = tuple([(queue(k), off, length) for k, off, length in nd.holds]) if nd.holds else ()
                nodes.append((nd.mnemonic, q, nd.x, nd.n, mem, nd.rel, nd.dynamic, inputs, holds))
            out.append(tuple(nodes))
        h = hashlib.sha256(canonical_bytes(out))
        # when what the block reads from outside landed, relative to the release (earlier is as good
        # as at the release: no job of the block starts before it)
        for t_id in tensors:
            t = sched.tensors[t_id]
            if t.kind in READY:  # every vector in place from cycle 0
                h.update(canonical_bytes(("ready", t.vectors)))
                continue
            land = t.landing
            h.update(np.where(land < 0, -1, np.maximum(land - release, 0)).astype(np.int64).tobytes())
            if t.last_read is not None:
                h.update(np.maximum(t.last_read - release, -1).astype(np.int64).tobytes())
            h.update(b"|")
        # reservations of the resources the block uses that end after the release
        for raw, canon in used.items():
            iv = sched.queues.get(raw)
            if iv is None:
                continue
            k = bisect.bisect_right(iv.ends, release)
            # busy time before the release cannot move the block (merged intervals may start there)
            body = [(max(a - release, 0), b - release) for a, b in zip(iv.starts[k:], iv.ends[k:])]
            if body:
                h.update(canonical_bytes((canon, body)))
        for chip in flow_chips:  # streams are tried lowest first: every stream of the chip, by number
            for key in sorted(sched.streams_of_chip.get(chip, ())):
                rects = [r for r in sched.streams.by_key.get(key, ()) if r[1] + r[3] >= release]
                if rects:
                    body = [(r[0] - release, r[1] - release, r[2], r[3]) for r in rects]
                    h.update(canonical_bytes((chips[chip], key[1:], body)))
        self._names = (chips, used, tensors)
        return h.digest()

    def place(
        self, sched: Scheduler, jobs: list[Job], block: list[int], release: int, use: bool = True
    ) -> dict[int, Placed]:
        """Place a block: committed at known relative cycles when an equal block was searched before,
        else searched job by job (and remembered)."""
        key = self.key(sched, jobs, block, release) if use else None
        self.last_key = key
        known = self.known.get(key) if key is not None else None
        placed: dict[int, Placed] = {}
        if known is not None:
            self.hits += 1
            starts, changes = known
            if not isinstance(changes, list):  # made canonical when first needed (most blocks never are)
                log, names, searched_at = changes
                changes = known[1] = _renamed(log, names, shift=-searched_at)
            for j, (rel, streams) in zip(block, starts):
                placed[j] = Placed(release + rel, dict(streams))
            # what committing those jobs there would do to the tables: the searched block's changes,
            # renamed to this block's chips, queues and tensors and shifted to its release
            sched.replay(_renamed(changes, self._names, back=True), release)
            return placed
        self.misses += 1
        if key is not None:
            sched.log = []
        for j in block:
            placed[j] = sched.place(jobs[j], release)
        if key is not None:
            starts = [(placed[j].start - release, placed[j].streams) for j in block]
            self.known[key] = [starts, (sched.log, self._names, release)]
            sched.log = None
        return placed


def canonical_bytes(x) -> bytes:
    """Bytes that are equal exactly when the (nested tuples, lists, ints, strings, None) are:
    marshal's format 2 (no back-references, so sharing does not show), else the text."""
    try:
        return marshal.dumps(x, 2)
    except ValueError:  # a numpy scalar or another object marshal does not know
        return repr(x).encode()


def _renamed(log: list, names, back: bool = False, shift: int = 0) -> list:
    """A log of table changes (Scheduler.log) with raw names made canonical (a block's `names` from
    `StageMemo.key`), or canonical ones raw again (`back`), its cycles moved by `shift`."""
    chips, used, tensors = names
    if back:
        chips, used, tensors = ({v: k for k, v in m.items()} for m in names)
    out = []
    for what, key, *rest in log:
        if what == HOLD:
            out.append((what, used[key], rest[0] + shift, rest[1]))
        elif what == STREAM:
            d0, d1, u0, u1 = rest
            out.append((what, (chips[key[0]], *key[1:]), d0 + shift, d1 + shift, u0, u1))
        else:
            index, value = rest
            out.append((what, tensors[key], index, value + shift))
    return out

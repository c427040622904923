"""Jobs: small trees of instructions whose timing relative to each other is fixed.

A job reads vectors from SRAM, passes them through units over streams and
writes results back. Within a job every consumer samples its input exactly when
the producer's vector arrives (DESIGN.md 4.1, the same rule isa/spec.py states):

    arrival = producer issue + dfunc(producer) + |x(consumer) - x(producer)| + i
    consumer issue = arrival - dskew(consumer) - i

`align` fixes each instruction's cycle relative to the job's start by walking
the tree from the leaves, delaying earlier branches so that all inputs of an
instruction arrive on the same cycle. The scheduler then places whole jobs.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from isa.spec import BY_MNEMONIC


@dataclass(slots=True)  # millions of them in a deep pipeline: no per-node __dict__
class Node:
    mnemonic: str
    queue: int  # queue index on the chip
    x: int  # slice position
    n: int
    fields: dict[str, int] = field(default_factory=dict)  # every non-stream field
    inputs: list[tuple[str, int]] = field(default_factory=list)  # (stream field, producer node)
    after: list[tuple[int, int]] = field(default_factory=list)  # (node, gap): issue >= node issue + gap
    mem: tuple[int, int, int] | None = None  # read / write: (tensor id, first vector, step in vectors)
    sources: dict[str, int] = field(
        default_factory=dict
    )  # implicit sources: "w" -> iw node, "acc" -> mm node
    rel: int = 0  # issue cycle relative to the job start
    dynamic: bool = False  # gather / scatter: the address comes from a vector, any word of `mem` may move
    chip: int = -1  # the chip it runs on (-1: the lowering's chip)
    # further resources it holds: (key, offset from issue, cycles); a send holds its link direction
    holds: list[tuple[tuple, int, int]] = field(default_factory=list)
    # a read / write whose vectors are not one arithmetic run: (first i, first vector, step) per run,
    # the first being `mem`'s; it becomes one instruction per run, issued back to back on its queue
    segments: tuple[tuple[int, int, int], ...] | None = None
    spec: object = field(init=False, repr=False, compare=False)  # the ISA's OpSpec of the mnemonic

    def __post_init__(self):
        self.spec = BY_MNEMONIC[self.mnemonic]  # looked up once: read millions of times

    def vectors(self) -> np.ndarray:
        """The tensor vectors a (non-dynamic) read or write touches, in order."""
        _, first, step = self.mem
        if self.segments is None:
            return first + step * np.arange(self.n)
        ends = [s for s, _, _ in self.segments[1:]] + [self.n]
        return np.concatenate([f + st * np.arange(e - s) for (s, f, st), e in zip(self.segments, ends)])

    def segment(self, i: int) -> tuple[int, int, int]:
        """(first i, first vector, step) of the run that vector i of the node belongs to."""
        if self.segments is None:
            return (0, *self.mem[1:])
        return self.segments[bisect_right(self.segments, (i, 1 << 62, 0)) - 1]


def runs(index) -> list[tuple[int, int, int]]:
    """Vector indices cut into maximal arithmetic runs, greedily from the start: (first i, first
    vector, step) each."""
    index = np.asarray(index, np.int64)
    n = len(index)
    d = np.diff(index)
    change = np.nonzero(d[1:] != d[:-1])[0] + 1  # m where the step d[m] differs from d[m - 1]
    out = []
    i = 0
    while i < n:
        if i == n - 1:
            out.append((i, int(index[i]), 1))
            break
        k = int(np.searchsorted(change, i, side="right"))
        end = int(change[k]) if k < len(change) else n - 1  # the run holds elements i .. end
        out.append((i, int(index[i]), int(d[i])))
        i = end + 1
    return out


@dataclass
class Job:
    name: str  # for diagnostics and listings: the IR op it comes from
    nodes: list[Node] = field(default_factory=list)
    op_index: int = -1  # the IR op it lowers (for the listing's comments)
    loc: str = ""  # that op's place in the .lpu text (file:line:col), "" for collectives
    _span: tuple[int, int] | None = field(default=None, repr=False, compare=False)

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def reads(self):
        return [(k, nd) for k, nd in enumerate(self.nodes) if nd.mnemonic == "read"]

    def writes(self):
        return [(k, nd) for k, nd in enumerate(self.nodes) if nd.mnemonic == "write"]

    def span(self) -> tuple[int, int]:
        """(first, end) cycles of the job relative to its start: issue to the last busy cycle or the
        last vector out, whichever is later. Kept once asked for (the job is aligned by then)."""
        if self._span is None:
            start = min(nd.rel for nd in self.nodes)
            end = max(
                max(nd.rel + nd.spec.busy_cycles(nd.n), nd.rel + nd.spec.dfunc + nd.n) for nd in self.nodes
            )
            self._span = (start, end)
        return self._span


def arrival(job: Job, producer: int, consumer: int) -> int:
    """Cycle (relative) at which vector 0 of `producer` reaches `consumer`."""
    p, c = job.nodes[producer], job.nodes[consumer]
    return p.rel + p.spec.dfunc + abs(c.x - p.x)


def _shift(job: Job, k: int, delta: int) -> None:
    """Delay node k and everything feeding it by `delta` cycles."""
    todo = [k]
    seen = set()
    while todo:
        j = todo.pop()
        if j in seen:
            continue
        seen.add(j)
        job.nodes[j].rel += delta
        todo.extend(p for _, p in job.nodes[j].inputs)


def align(job: Job) -> Job:
    """Fix relative issue cycles; nodes must be listed producers first (a tree per write)."""
    nodes = job.nodes
    for k, nd in enumerate(nodes):
        sample = None
        inputs = nd.inputs
        for _, p in inputs:
            pn = nodes[p]
            assert p < k, "producers are listed before their consumers"
            assert pn.n == nd.n, (job.name, nd.mnemonic, pn.mnemonic)
            a = pn.rel + pn.spec.dfunc + abs(nd.x - pn.x)  # arrival(job, p, k)
            if sample is None or a > sample:
                sample = a
        for other, gap in nd.after:
            assert other < k
            need = nodes[other].rel + gap + nd.spec.dskew
            if sample is None or need > sample:
                sample = need
        if sample is None:
            continue
        nd.rel = sample - nd.spec.dskew
        for _, p in inputs:
            pn = nodes[p]
            late = sample - (pn.rel + pn.spec.dfunc + abs(nd.x - pn.x))
            if late:
                _shift(job, p, late)
    lo = min(nd.rel for nd in nodes)
    if lo:
        for nd in nodes:
            nd.rel -= lo
    _check(job)
    return job


def _check(job: Job) -> None:
    nodes = job.nodes
    for nd in nodes:
        sample = nd.rel + nd.spec.dskew
        for _, p in nd.inputs:
            pn = nodes[p]
            assert pn.rel + pn.spec.dfunc + abs(nd.x - pn.x) == sample, (job.name, nd.mnemonic, p)
        for other, gap in nd.after:
            assert nd.rel >= nodes[other].rel + gap, (job.name, nd.mnemonic, other)

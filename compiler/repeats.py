"""Runs of alike pipeline stages, found before lowering: what a timing-only compile stores once.

A deep pipeline repeats one stage kind many times (the layers of a transformer, one or two per
stage). compiler/stages.py already places a block of jobs equal to one searched before at the
same relative cycles; this module goes further and finds, from the partition alone, the runs of
stages whose blocks would lower alike, so that most of a run is neither lowered nor scheduled
nor emitted, and the program stores one block with the shifts of its copies
(isa.program.Repeats).

Stage s's block is what the scheduler places as one unit: the statements on its chips and the
transfers into it (a transfer belongs to the latest stage on its route). Two blocks are alike
when their statements are equal once chips are named by (stage offset, rank), values by first
appearance, and params and states by type and MEM slice; transfers compare their routes and the
link numbers on each hop (the queue a send uses). Lowering is a function of a chip's statements
and of its params' slices (compiler/backend.py), so alike blocks lower to alike jobs.

For a run of alike stages a .. e the backend lowers a, the template T = a + 1 .. a + period and
e, skips the copies a + period + 1 .. e - 1, and lowers e's block with the chips of e - 1 replaced
by T's last stage's: in a timing-only compile the scheduler then sees, before e, exactly the state
it would see after e - 1 (shifted in time). Exactness needs e to be placed as T's first stage was
(e found its key in the stage memo: the state T's last stage leaves is the state a left) and a
to be placed as T's last stage (so that the copies' reads of the stage before them, the hand-over
sends, are T's reads of a, a copy on, at the same words); the backend checks both. Why one repeat
implies all: a block's placement is a function of its memo key (compiler/stages.py), and when
block s + 1 is block s shifted by D, renamed one stage on, the state block s + 2 meets
(reservations on the chips of s + 1 and s + 2, landings of what it reads) is the state s + 1 met,
shifted by D, so its key is s + 1's. The first stage of a run of alike statements is usually not
placed alike (its own predecessor is not alike): a run starts `warm` stages into it, one by
default, and the backend compiles again a period in if that does not repeat, then every stage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from compiler.ir import Global, Value
from compiler.partition import Local, LocalCommit, Place, Plan, Transfer
from compiler.stages import canonical_bytes

MAX_PERIOD = 16  # the longest period looked for


@dataclass(frozen=True)
class Run:
    """Stages first + 1 .. last lower alike, `period` stages apart (a stage holds what the stage a
    period before it holds, a period of layers on), and so does `first`, whose block is placed as
    the template's last stage's. The template, the period of stages after `first`, is lowered and
    placed; the stages from there to last - 1 are copies of it, a period at a time; `last` (alike
    the template's first stage) is lowered with the template's last stage standing in for the one
    before it."""

    first: int
    last: int
    period: int = 1

    @property
    def template(self) -> int:
        """The template's first stage."""
        return self.first + 1

    @property
    def template_last(self) -> int:
        return self.first + self.period

    @property
    def copies(self) -> range:
        return range(self.template_last + 1, self.last)

    @property
    def count(self) -> int:
        """How many times the template is repeated after itself."""
        return len(self.copies) // self.period

    def like(self, s: int) -> int:
        """The template's stage that a copy stage repeats."""
        return self.template + (s - self.template) % self.period


def block_of(stmt, stage_of_chip: dict[int, int]) -> int:
    if isinstance(stmt, Transfer):
        return max(stage_of_chip.get(c, 0) for c in stmt.route)
    return stage_of_chip.get(stmt.chip, 0)


def blocks_of(ep, stage_of_chip: dict[int, int]) -> dict[int, list]:
    """An entry's statements by the block (stage) they belong to, in order."""
    blocks: dict[int, list] = {}
    for st in ep.stmts:
        blocks.setdefault(block_of(st, stage_of_chip), []).append(st)
    return blocks


def chips_of(stmt) -> tuple[int, ...]:
    if isinstance(stmt, Transfer):
        return stmt.route
    return (stmt.chip,)


class _Canon:
    """The canonical text of one block's statements."""

    def __init__(self, stage: int, tp: int, slice_of, link_of):
        self.stage = stage
        self.tp = tp
        self.slice_of = slice_of  # (chip, global name) -> MEM slice of its tensor
        self.link_of = link_of  # (chip a, chip b) -> (link number on a, on b)
        self.values: dict[int, int] = {}
        self.out: list = []

    def chip(self, c: int) -> tuple[int, int]:
        return (c // self.tp - self.stage, c % self.tp)

    def value(self, v, chip: int):
        if isinstance(v, Global):
            return ("g", v.kind, (v.type.dtype, v.type.shape), self.slice_of(chip, v.name))
        k = self.values.get(id(v))
        if k is None:
            k = self.values[id(v)] = len(self.values)
            # first appearance: defined here or outside the block
            return ("v", k, (v.type.dtype, v.type.shape))
        return ("v", k)

    def add(self, st) -> None:
        if isinstance(st, Local):
            op = st.op
            ins = tuple(self.value(o, st.chip) for o in op.operands)
            self.out.append(("L", self.chip(st.chip), op.name, op.attrs, ins, self.value(op.result, st.chip)))
        elif isinstance(st, Transfer):
            route = st.route
            hops = tuple(self.link_of(a, b) for a, b in zip(route[:-1], route[1:]))
            self.out.append(
                (
                    "T",
                    tuple(self.chip(c) for c in route),
                    hops,
                    self.value(st.src, route[0]),
                    st.src_vectors,
                    self.value(st.dst, route[-1]),
                    st.dst_vectors,
                )
            )
        elif isinstance(st, Place):
            self.out.append(
                (
                    "P",
                    self.chip(st.chip),
                    self.value(st.src, st.chip),
                    st.src_vectors,
                    self.value(st.dst, st.chip),
                    st.dst_vectors,
                )
            )
        else:
            assert isinstance(st, LocalCommit)
            self.out.append(
                ("C", self.chip(st.chip), self.value(st.state, st.chip), self.value(st.value, st.chip))
            )

    def digest(self) -> bytes:
        return hashlib.sha256(canonical_bytes(self.out)).digest()


def find_runs(plan: Plan, slice_of, link_of, warm: int | None = 1) -> list[Run]:
    """The runs of alike stages, starting `warm` stages into them (None: a period), with a copy of
    their template at least, whose inner stages can be copies: every entry's blocks alike, each
    block touching only its own and the previous stage's chips, no entry output on a copy's chips,
    and nothing outside the run touching a copy's chips."""
    tp, pp = plan.tp, plan.pp
    if pp < 5:  # the stage before, a, T, a copy of T, e
        return []
    stage_of_chip = {c: s for s, g in enumerate(plan.groups) for c in g}
    keys: list[list[bytes]] = [[] for _ in range(pp)]
    local = [True] * pp  # the block touches only its stage and the one before
    touched: list[set[int]] = [set() for _ in range(pp)]  # stages whose chips each block touches
    for ep in plan.entries:
        canon = [_Canon(s, tp, slice_of, link_of) for s in range(pp)]
        for st in ep.stmts:
            s = block_of(st, stage_of_chip)
            canon[s].add(st)
            for c in chips_of(st):
                t = stage_of_chip.get(c, -1)
                touched[s].add(t)
                if t not in (s, s - 1):
                    local[s] = False
        for s in range(pp):
            keys[s].append(canon[s].digest())
        for c, _ in ep.outputs:
            local[stage_of_chip.get(c, 0)] = False
    best: list[Run] = []
    for period in range(1, min(MAX_PERIOD, (pp - 3) // 2) + 1):
        runs = _runs_of_period(keys, local, touched, pp, period, warm)
        if sum(len(r.copies) for r in runs) > sum(len(r.copies) for r in best):
            best = runs
    return best


def _runs_of_period(keys, local, touched, pp: int, period: int, warm: int | None) -> list[Run]:
    """The runs whose stages are alike `period` apart (see `Run`), `warm` stages in, each with a copy
    at least."""
    runs = []
    s = 1
    while s < pp:
        e = s
        while e + 1 < pp and local[e + 1] and (e + 1 - period < s or keys[e + 1] == keys[e + 1 - period]):
            e += 1
        if e - period < s:  # nothing repeats from s
            s += 1
            continue
        first = s + (period if warm is None else warm)
        last = first + 1 + (e - first - 1) // period * period  # alike the template's first stage
        run = Run(first, last, period)
        if local[first] and run.count >= 1:
            copies = set(run.copies)
            outside = [t for b in range(pp) if b not in copies and b != last for t in touched[b]]
            if not copies & set(outside):
                runs.append(run)
                s = last + 1
                continue
        s += 1
    return runs


def value_map(plan: Plan, run: Run, stage_of_chip: dict[int, int]) -> list[dict[int, Value]]:
    """Per entry: the values of the copy stage before e that e's block reads (what its hand-over
    sends), by id, to the template's values at the same places (stage T's, which block T + 1 would
    read): e's block is lowered as if T came right before it."""
    out = []
    for ep in plan.entries:
        blocks = blocks_of(ep, stage_of_chip)
        mine, theirs = blocks[run.last], blocks[run.template_last + 1]
        assert len(mine) == len(theirs), "alike blocks have as many statements"
        prev = run.last - 1
        m: dict[int, Value] = {}
        for a, b in zip(mine, theirs):
            for x, y in _operands(a, b):
                if isinstance(x, Value) and stage_of_chip.get(_home(a, x), -1) == prev:
                    m[id(x)] = y
        out.append(m)
    return out


def _operands(a, b):
    if isinstance(a, Transfer):
        return [(a.src, b.src)]
    if isinstance(a, Local):
        return list(zip(a.op.operands, b.op.operands))
    if isinstance(a, Place):
        return [(a.src, b.src)]
    return [(a.value, b.value)]


def _home(st, v) -> int:
    """The chip a statement reads `v` on."""
    return st.route[0] if isinstance(st, Transfer) else st.chip


def op_key(st) -> tuple[str, str]:
    """The (op text, IR location) the jobs of a statement are named by (compiler/backend.py)."""
    if isinstance(st, Local):
        return st.what, str(st.op.loc) if st.op.loc is not None and st.index >= 0 else ""
    return st.what, ""


def op_names(ep, run: Run, stage_of_chip: dict[int, int]) -> tuple[dict, list[dict]]:
    """The op names of the template's jobs, and per copy k (1..) what they are named in the copy.
    The template's block is its stage's statements and the first hops of the hand-over out of it;
    the stage after the run provided those (it stood in for the template's successor), so they are
    named after that stage's statements: the first map renames them after the template's successor
    (an (op text, IR location) -> (op text, IR location) map), the others rename the template's
    jobs after the copy's stage and its successor."""
    blocks = blocks_of(ep, stage_of_chip)
    t, last = run.template, run.last

    def pairs(*blocks_pairs) -> dict:
        names: dict[tuple, tuple] = {}
        for mine, theirs in blocks_pairs:
            for a, b in zip(mine, theirs):
                names.setdefault(op_key(a), op_key(b))
        return names

    end, period = run.template_last + 1, run.period
    fix = pairs((blocks[last], blocks[end]))
    copies = [
        pairs(*[(blocks[s], blocks[s + k * period]) for s in range(t, end + 1)])
        for k in range(1, run.count + 1)
    ]
    return fix, copies

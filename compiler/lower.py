"""Lowers a decomposed graph to jobs for one chip: tensors become vectors in MEM slices.

Layout (the same as isa.program.Placement): a tensor is [rows, cols] with cols its
last dimension; vector (r, c) holds columns [c L, (c + 1) L) of row r. Two
invariants hold for every tensor the compiler produces:

- lanes past the last column are zero (so sums and matrix passes can ignore them);
- a one-column tensor fills every lane with its value ("splat"), so it broadcasts
  against wider rows by re-reading the same word (a read with step 0).

How each op runs:

- elementwise ops, casts, comparisons and `where`: MEM reads -> one VXM op -> MEM write,
  one pipeline for the whole tensor when every operand has the output's shape (or
  is a scalar), else one per row; a `sel` against a constant mask keeps padding
  lanes zero where the op would not;
- reductions: along the last axis, VXM adds (or maxes) over a row's vectors, then an
  SXM lane reduction; along other axes, a chain of VXM adds over vectors;
- `matmul`: per output column chunk and block of rows, for each K-tile: weight
  rows streamed into a plane's shadow buffer (lw), installed (iw), activations
  streamed through (mm, accumulating), then the accumulator drained (acc) to SRAM;
- data movement (reshape, transpose, concat, slice, and the relayout after a
  last-axis reduction): each output vector gathers lanes from its source vectors
  with SXM permutations (maps that zero unused lanes) summed on the VXM; whole
  vectors that move unchanged are copied MEM to MEM;
- `constant` and `iota` become SRAM image data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compiler.ir import Global, Graph, Module, Op, Operand, TensorType, Value
from compiler.jobs import Job, Node, align, runs
from isa.chip import ChipConfig
from isa.diagnostics import error
from isa.numerics import convert
from isa.spec import DTYPE_BYTES, DTYPES, ENUMS, Unit

VXM_OPS = {
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "div": "div",
    "max": "max",
    "min": "min",
    "neg": "neg",
    "relu": "relu",
    "exp": "exp",
    "log": "log",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "erf": "erf",
    "sqrt": "sqrt",
    "rsqrt": "rsqrt",
    "recip": "recip",
    "cast": "cvt",
    "less": "lt",
    "greater": "gt",
    "equal": "eq",
    "where": "sel",
}
# ops that can turn zero padding into something else (or read a splat operand's value into it)
NONZERO_FROM_ZERO = {"exp", "log", "sigmoid", "rsqrt", "recip", "div", "eq"}


@dataclass(eq=False)
class Tensor:
    id: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    slice: str
    kind: str  # "input" | "param" | "const" | "temp"
    lanes: int
    data: np.ndarray | None = None  # const: float64 [vectors, lanes]
    landing: np.ndarray | None = field(default=None, repr=False)  # per vector: cycle it lands (scheduler)
    last_read: np.ndarray | None = field(default=None, repr=False)  # state: per vector, its last read
    chip: int = 0  # the chip whose SRAM holds it
    # written a column chunk of all rows at a time (a matmul's result): what reads it whole goes so too
    chunk_major: bool = False

    @property
    def cols(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1]) if self.shape else 1

    @property
    def chunks(self) -> int:
        return -(-self.cols // self.lanes)

    @property
    def vectors(self) -> int:
        return self.rows * self.chunks

    @property
    def width(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def splat(self) -> bool:
        return self.cols == 1

    @property
    def size_one(self) -> bool:
        return math.prod(self.shape) == 1

    def view(self, shape: tuple[int, ...]) -> Tensor:
        """The same vectors seen with another shape of the same rows and columns."""
        v = Tensor(
            self.id,
            self.name,
            self.dtype,
            shape,
            self.slice,
            self.kind,
            self.lanes,
            self.data,
            chip=self.chip,
            chunk_major=self.chunk_major,
        )
        assert (v.rows, v.cols) == (self.rows, self.cols)
        return v


class Lowering:
    """Turns the ops of one graph into jobs; tensors are shared across graphs through `symbols`."""

    # a matmul starts on the side whose planes loaded fewer weight rows (`start_sides`), a block takes
    # its side's planes that loaded fewest (`side`); False: the sides only take turns and a block
    # takes planes 0.., as before stop 23 (benchmarks/planes.py compares them)
    balance_sides = True
    # True: a matmul block holds each of its planes whole for its span, as before stop 23
    # (`_hold_plane`; benchmarks/planes.py)
    hold_planes_whole = False
    # a matmul of fewer rows than a tile whose activation feeds at least this many matmuls goes whole
    # on one plane (`one_plane`); 0: never, as before stop 23 (benchmarks/planes.py)
    one_plane_siblings = 4

    def __init__(
        self, chip: ChipConfig, tensors: list[Tensor], symbols: dict[str, Tensor], chip_index: int = 0
    ):
        self.chip = chip
        self.chip_index = chip_index  # which chip of the system its jobs run on
        self.L = chip.lanes
        self._identity = list(range(chip.lanes))  # a lane map that moves nothing
        self._none = [-1] * chip.lanes  # one that takes nothing
        self.tensors = tensors
        self.symbols = symbols
        self.jobs: list[Job] = []
        queues = chip.queue_table()
        self.queue_index = {q.name: q.index for q in queues}
        self.queue_x = {q.index: q.x for q in queues}
        self.slices = self._slice_order()
        self._rr = {"slice": 0, "vxm": 0, "sxm": 0, "plane": 0}
        self._vxm_queues: list[int] | None = None  # the VXM ALU queues' indices, in round-robin order
        self._load: dict[str, tuple[float, int]] = {}  # temporaries placed lately per slice (_roomy)
        self._clock = 0
        self._decay = 1 - 1 / len(self.slices)  # what a temporary's bytes fade by per one placed
        self.maps: dict[tuple[int, ...], int] = {}
        self._consts: dict[tuple, Tensor] = {}
        self.values: dict[int, Tensor] = {}
        self.pinned: dict[str, int] = {}  # bytes held for good per slice (shared by a chip's lowerings)
        # weights fill most of the chip: params fill slices one after another, so that whole slices
        # stay free for the temporaries (weights spread over every slice leave none room for them)
        self.pack = False
        self.op_index = -1
        self.op_name = ""
        self.op_loc = ""  # the IR location of the op being lowered ("" for collectives)
        self.in_place: set[int] = set()  # update_slice ops that write their state in place (ids)
        # per activation (id of the value): how many matmuls of the entry read it on this chip
        # (compiler/backend._lower_statements counts them before lowering)
        self.siblings: dict[int, int] = {}

    # -- places ------------------------------------------------------------------------------
    def _slice_order(self) -> list[str]:
        k = self.chip.mem_slices_per_hemisphere
        out = []
        for i in range(k):
            out += [f"mem.w{i}", f"mem.e{i}"]
        return out

    def pick_slice(self, avoid: set[str] = frozenset()) -> str:
        for _ in range(len(self.slices)):
            s = self.slices[self._rr["slice"] % len(self.slices)]
            self._rr["slice"] += 1
            if s not in avoid:
                return s
        raise error(
            f"{self.op_name}: this op reads and writes {len(avoid) + 1} tensors at once, which need as "
            f"many MEM slices; a {self.chip.name} chip has {len(self.slices)}"
        )

    def x_of_slice(self, name: str) -> int:
        if not hasattr(self, "_positions"):
            self._positions = {sl.name: sl.x for sl in self.chip.slices()}
        return self._positions[name]

    def vxm_queue(self, avoid: int | None = None) -> int:
        vxm = self._vxm_queues
        if vxm is None:
            vxm = self._vxm_queues = [self.queue_index[f"vxm.q{k}"] for k in range(self.chip.vxm_alu_queues)]
        rr = self._rr
        for _ in range(len(vxm)):
            q = vxm[rr["vxm"] % len(vxm)]
            rr["vxm"] += 1
            if q != avoid:
                break
        return q

    def sxm_queue(self, near_x: int) -> int:
        side = "w" if near_x < self.x_of_slice("mem.e0") else "e"
        k = self._rr["sxm"] % self.chip.sxm_queues_per_hemisphere
        self._rr["sxm"] += 1
        return self.queue_index[f"sxm.{side}.q{k}"]

    def plane_queue(self, side: str, plane: int, role: int) -> int:
        per = self.chip.mxm_queues_per_plane
        return self.queue_index[f"mxm.{side}.q{plane * per + role % per}"]

    def map_id(self, lanes: list[int]) -> int:
        key = tuple(lanes)
        if key not in self.maps:
            self.maps[key] = len(self.maps)
        return self.maps[key]

    # -- tensors -------------------------------------------------------------------------------
    def new_tensor(
        self,
        name: str,
        t: TensorType,
        kind: str = "temp",
        avoid: set[str] = frozenset(),
        data: np.ndarray | None = None,
    ) -> Tensor:
        where = self.pick_slice(avoid)
        cols = t.shape[-1] if t.shape else 1
        size = math.prod(t.shape[:-1]) * -(-cols // self.L) * self.L * DTYPE_BYTES[t.dtype]
        room = self.chip.mem_slice_bytes
        packed = None
        if self.pack and kind == "param":  # SRAM is short: fill slices in order (to 15/16, a little
            # room for what reads them), leaving the last ones free
            limit = room * 15 // 16
            fits = [s for s in self.slices if s not in avoid and self.pinned.get(s, 0) + size <= limit]
            packed = fits[0] if fits else None
        where = packed or self._roomy(where, size, avoid, kind not in ("param", "const", "state"))
        if kind in ("param", "const", "state"):  # held for good
            self.pinned[where] = self.pinned.get(where, 0) + size
        tensor = Tensor(
            len(self.tensors), name, t.dtype, t.shape, where, kind, self.L, data, chip=self.chip_index
        )
        self.tensors.append(tensor)
        return tensor

    def _roomy(self, where: str, size: int, avoid: set[str], temp: bool) -> str:
        """A slice for `size` more bytes: `where` (round robin) while what is held there for good takes
        less than a quarter of it, else the slice with the most room left, counting what is held for
        good and what temporaries placed lately take (their bytes fade as more are placed: a
        temporary lives a while, not for good), else the roomiest slice. The allocator finds a slice
        that temporaries overflow only after scheduling; a slice weights fill has room for few, and
        the first free slice after a run of full ones would take them all."""
        room = self.chip.mem_slice_bytes
        self._clock += temp
        if self.pinned.get(where, 0) + size > room // 4:
            best = -1
            pinned = self.pinned
            for s in self.slices:
                held = pinned.get(s, 0)
                if s in avoid or held + size > room:
                    continue
                left = room - held - self._load_of(s)
                if left > best:
                    where, best = s, left
            if best < 0:  # fits nowhere: the roomiest, first in slice order (the allocator says by how much)
                free = [s for s in self.slices if s not in avoid]
                where = min(free, key=lambda s: self.pinned.get(s, 0), default=where)
        if temp:
            self._load[where] = (self._load_of(where) + size, self._clock)
        return where

    def _load_of(self, s: str) -> float:
        """Bytes of temporaries placed in slice `s` lately, fading by 1 / slices per temporary placed."""
        v, t = self._load.get(s, (0.0, 0))
        return v * self._decay ** (self._clock - t) if v else 0.0

    def const(
        self, dtype: str, shape: tuple[int, ...], values: np.ndarray, avoid: set[str] = frozenset()
    ) -> Tensor:
        """A constant in SRAM (shared when the same values are asked for again outside `avoid`)."""
        key = (dtype, shape, np.asarray(values, np.float64).tobytes())
        for t in self._consts.get(key, []):
            if t.slice not in avoid:
                return t
        t = self.new_tensor(
            f"const{sum(len(v) for v in self._consts.values())}",
            TensorType(dtype, shape),
            "const",
            avoid=avoid,
            data=self.vectors_of(np.asarray(values, np.float64).reshape(shape), dtype),
        )
        self._consts.setdefault(key, []).append(t)
        return t

    def vectors_of(self, x: np.ndarray, dtype: str) -> np.ndarray:
        x = convert(np.asarray(x, np.float64), dtype).astype(np.float64)
        rows = math.prod(x.shape[:-1]) if x.ndim else 1
        cols = x.shape[-1] if x.ndim else 1
        flat = x.reshape(rows, cols)
        if cols == 1:
            return np.repeat(flat, self.L, axis=1)
        chunks = -(-cols // self.L)
        out = np.zeros((rows, chunks * self.L))
        out[:, :cols] = flat
        return out.reshape(rows * chunks, self.L)

    def tensor(self, o: Operand) -> Tensor:
        if isinstance(o, Global):
            return self.symbols[o.name]
        return self.values[id(o)]

    # -- building blocks ---------------------------------------------------------------------------
    def _mem(
        self,
        job: Job,
        mnemonic: str,
        t: Tensor,
        first: int,
        n: int,
        step_vectors: int,
        inputs: list[tuple[str, int]],
    ) -> int:
        q = self.queue_index[t.slice]
        fields = {"step": step_vectors * t.width, "dt": DTYPES.index(t.dtype)}
        return job.add(
            Node(mnemonic, q, self.queue_x[q], n, fields, inputs=inputs, mem=(t.id, first, step_vectors))
        )

    def _mem_runs(self, job: Job, mnemonic: str, t: Tensor, index: np.ndarray, inputs) -> int:
        """A read or write of the vectors `index` of t, in that order: one node, one instruction per
        arithmetic run of the index."""
        segments = runs(index)
        k = self._mem(job, mnemonic, t, segments[0][1], len(index), segments[0][2], inputs)
        if len(segments) > 1:
            job.nodes[k].segments = tuple(segments)
        return k

    def read_index(self, job: Job, t: Tensor, index: np.ndarray) -> int:
        return self._mem_runs(job, "read", t, index, [])

    def write_index(self, job: Job, t: Tensor, index: np.ndarray, producer: int) -> int:
        return self._mem_runs(job, "write", t, index, [("a", producer)])

    def read(self, job: Job, t: Tensor, first: int, n: int, step_vectors: int) -> int:
        return self._mem(job, "read", t, first, n, step_vectors, [])

    def write(self, job: Job, t: Tensor, first: int, n: int, step_vectors: int, producer: int) -> int:
        return self._mem(job, "write", t, first, n, step_vectors, [("a", producer)])

    def unit(
        self, job: Job, mnemonic: str, queue: int, n: int, inputs: list[tuple[str, int]], **fields
    ) -> int:
        return job.add(Node(mnemonic, queue, self.queue_x[queue], n, dict(fields), inputs=list(inputs)))

    def finish(self, job: Job) -> Job:
        # nodes on the same queue keep their creation order and never overlap
        for nd in job.nodes:
            if nd.chip < 0:
                nd.chip = self.chip_index
        last: dict[tuple[int, int], int] = {}
        for k, nd in enumerate(job.nodes):
            key = (nd.chip, nd.queue)
            if key in last:
                p = last[key]
                prev = job.nodes[p]
                nd.after.append((p, prev.spec.busy_cycles(prev.n)))
            last[key] = k
        job.op_index = self.op_index
        job.loc = self.op_loc
        align(job)
        self.jobs.append(job)
        return job

    def new_job(self) -> Job:
        return Job(self.op_name)

    # -- graph -----------------------------------------------------------------------------------
    def lower_graph(self, g: Graph, inputs: dict[str, Tensor]) -> list[Tensor]:
        for op in g.ops:
            self.count_matmul(op)
        for a in g.args:
            self.values[id(a)] = inputs[a.name]
        for k, op in enumerate(g.ops):
            self.op_index, self.op_name = k, f"%{op.result.name or k} = {op.name}"
            self.lower_op(op)
        early = self.copy_states_returned([self.tensor(r) for r in g.results], g.result_types)
        for c in g.commits:
            # the new value is copied into the state's own words after every read of the old value
            # (the scheduler orders writes of a state after its reads)
            self.op_name = f"commit @{c.state.name}"
            self.copy(self.tensor(c.value), self.symbols[c.state.name])
        results = []
        seen: set[int] = set()
        for k, (r, t) in enumerate(zip(g.results, g.result_types)):
            src = early.get(k) or self.tensor(r)
            if src.kind != "temp" or src.id in seen:
                self.op_name = "copy for return"
                dst = self.new_tensor("out", t, avoid={src.slice})
                self.copy(src, dst)
                src = dst
            seen.add(src.id)
            results.append(src)
        return results

    def copy_states_returned(self, srcs: list[Tensor], types) -> dict[int, Tensor]:
        """Results that are a state's value (or a view of it) mean the value before the commit: they
        are copied out before any commit is lowered (a commit's write waits for earlier reads)."""
        out = {}
        for k, (src, t) in enumerate(zip(srcs, types)):
            if src.kind == "state":
                self.op_name = "copy for return"
                out[k] = self.new_tensor("out", t, avoid={src.slice})
                self.copy(src, out[k])
        return out

    def lower_op(self, op: Op) -> None:
        name = op.name
        t = op.result.type
        if name in VXM_OPS:
            self.values[id(op.result)] = self.elementwise(op)
        elif name in ("reduce_sum", "reduce_max"):
            self.values[id(op.result)] = self.reduce(op)
        elif name == "matmul":
            self.values[id(op.result)] = self.matmul(op)
        elif name == "constant":
            value = np.broadcast_to(np.array(op.attr("value"), dtype=np.float64), t.shape)
            self.values[id(op.result)] = self.const(t.dtype, t.shape, value)
        elif name == "iota":
            axis = op.attr("axis") % t.rank
            idx = np.arange(t.shape[axis]).reshape([-1 if a == axis else 1 for a in range(t.rank)])
            self.values[id(op.result)] = self.const(t.dtype, t.shape, np.broadcast_to(idx, t.shape))
        elif name == "reshape":
            src = self.tensor(op.operands[0])
            rows = math.prod(t.shape[:-1]) if t.shape else 1
            cols = t.shape[-1] if t.shape else 1
            if (src.rows, src.cols) == (rows, cols):
                self.values[id(op.result)] = src.view(t.shape)  # the same vectors: nothing moves
                return
            index = np.arange(src.rows * src.cols).reshape(t.shape)
            self.values[id(op.result)] = self.move([src], t, np.zeros_like(index), index)
        elif name == "transpose":
            src = self.tensor(op.operands[0])
            perm = op.attr("perm")
            perm = tuple(reversed(range(len(src.shape)))) if perm is None else perm
            index = np.transpose(np.arange(src.rows * src.cols).reshape(src.shape), perm)
            self.values[id(op.result)] = self.move([src], t, np.zeros_like(index), index)
        elif name == "slice":
            src = self.tensor(op.operands[0])
            axis = op.attr("axis") % len(src.shape)
            where = [slice(None)] * len(src.shape)
            where[axis] = slice(op.attr("start"), op.attr("stop"))
            index = np.arange(src.rows * src.cols).reshape(src.shape)[tuple(where)]
            self.values[id(op.result)] = self.move([src], t, np.zeros_like(index), index)
        elif name == "concat":
            srcs = [self.tensor(o) for o in op.operands]
            axis = op.attr("axis") % len(t.shape)
            which = np.concatenate([np.full(s.shape, k) for k, s in enumerate(srcs)], axis=axis)
            index = np.concatenate([np.arange(s.rows * s.cols).reshape(s.shape) for s in srcs], axis=axis)
            self.values[id(op.result)] = self.move(srcs, t, which, index)
        elif name == "gather":
            self.values[id(op.result)] = self.gather(op)
        elif name == "update_slice":
            self.values[id(op.result)] = self.update_slice(op)
        else:
            raise AssertionError(f"no lowering for {name}")

    # -- elementwise -----------------------------------------------------------------------------------
    def elementwise(self, op: Op) -> Tensor:
        srcs = [self.tensor(o) for o in op.operands]
        out_t = op.result.type
        # two different tensors in one slice cannot both be read on the same cycles: move one
        by_slice: dict[str, Tensor] = {}
        for k, s in enumerate(srcs):
            other = by_slice.get(s.slice)
            if other is not None and other is not s:
                moved = self.new_tensor(
                    f"{s.name}.copy", TensorType(s.dtype, s.shape), avoid={x.slice for x in srcs}
                )
                self.copy(s, moved)
                srcs[k] = s = moved
            by_slice[s.slice] = s
        out = self.new_tensor(op.result.name or "t", out_t, avoid={s.slice for s in srcs})
        mnemonic = VXM_OPS[op.name]
        dt = srcs[-1].dtype if op.name == "where" else srcs[0].dtype
        fields = {"dt": DTYPES.index(dt)}
        if op.name == "cast":
            fields["to"] = DTYPES.index(op.attr("to"))
        field_names = ["c", "a", "b"] if op.name == "where" else ["a", "b"][: len(srcs)]
        mask = (
            out.cols > 1
            and out.cols % self.L != 0
            and (op.name in NONZERO_FROM_ZERO or any(s.splat for s in srcs))
        )
        # fused masking needs a second VXM queue and two more slices; otherwise mask in a second job
        fused = (
            mask
            and self.chip.vxm_alu_queues >= 2
            and len(self.slices) >= len(srcs) + 4
            and self.chip.streams_per_direction >= len(srcs) + 3
        )
        target = out
        if mask and not fused:
            target = self.new_tensor("unmasked", out_t, avoid={s.slice for s in srcs} | {out.slice})
        order = np.arange(out.vectors)
        if out.rows > 1 and out.chunks > 1 and any(x.chunk_major and x.shape == out.shape for x in srcs):
            # a column chunk of all rows at a time, as a matmul wrote a source: row by row would read
            # it one vector at a time (each vector of a row has another writer)
            order = order.reshape(out.rows, out.chunks).T.reshape(-1)
            out.chunk_major = target.chunk_major = True
        self._vxm_pipeline(srcs, target, out, field_names, mnemonic, fields, order, mask and fused)
        if mask and not fused:
            self._mask(target, out, order)
        return out

    def _source_index(self, s: Tensor, out: Tensor) -> np.ndarray:
        """For each vector of `out` (in order), the vector of source s (same shape or broadcast) it takes."""
        if s.shape == out.shape:
            return np.arange(out.vectors)
        if s.size_one:
            return np.zeros(out.vectors, np.int64)
        lead = out.shape[:-1]
        src_lead = (1,) * (len(lead) - len(s.shape[:-1])) + tuple(s.shape[:-1])
        rows = np.broadcast_to(np.arange(s.rows).reshape(src_lead), lead).reshape(-1, 1)
        if s.splat:
            return np.repeat(rows, out.chunks, axis=1).reshape(-1)
        return (rows * s.chunks + np.arange(out.chunks)).reshape(-1)

    def _lane_mask(self, out: Tensor, busy: set[str]) -> tuple[Tensor, Tensor]:
        """Constants that zero out's padding lanes through a sel: a row of `chunks` vectors (vector c
        masks the real lanes of chunk c) and a zero, in slices other than `busy`."""
        lanes_ok = np.arange(out.chunks * self.L) < out.cols
        mask_t = self.const("bool", (out.chunks * self.L,), lanes_ok.astype(np.float64), avoid=busy)
        return mask_t, self.const(out.dtype, (), np.zeros(()), avoid=busy | {mask_t.slice})

    def _mask(self, src: Tensor, out: Tensor, order: np.ndarray) -> None:
        """out = src with its padding lanes zeroed, in one sel over the vectors in `order`."""
        mask_t, zero_t = self._lane_mask(out, {src.slice, out.slice})
        job = self.new_job()
        a = self.read_index(job, src, order)
        m = self.read_index(job, mask_t, order % out.chunks)
        z = self.read(job, zero_t, 0, len(order), 0)
        dt = DTYPES.index(out.dtype)
        res = self.unit(job, "sel", self.vxm_queue(), len(order), [("c", m), ("a", a), ("b", z)], dt=dt)
        self.write_index(job, out, order, res)
        self.finish(job)

    def _vxm_pipeline(
        self,
        srcs,
        target: Tensor,
        out: Tensor,
        field_names,
        mnemonic: str,
        fields: dict,
        order: np.ndarray,
        mask: bool,
    ) -> None:
        """target = mnemonic(srcs) over the output vectors in `order`, as one job whose reads and write
        are cut into runs of vectors (a broadcast source: a run per row), optionally followed by a sel
        that zeroes padding lanes."""
        n = len(order)
        if mask:
            mask_t, zero_t = self._lane_mask(out, {s.slice for s in srcs} | {target.slice})
        job = self.new_job()
        reads: dict[tuple, int] = {}
        inputs = []
        for fname, s in zip(field_names, srcs):
            index = self._source_index(s, out)[order]
            key = (s.id, index.tobytes())
            if key not in reads:
                reads[key] = self.read_index(job, s, index)
            inputs.append((fname, reads[key]))
        q = self.vxm_queue()
        res = self.unit(job, mnemonic, q, n, inputs, **fields)
        if mask:
            m = self.read_index(job, mask_t, order % out.chunks)
            z = self.read(job, zero_t, 0, n, 0)
            sel_q = self.vxm_queue(avoid=q)
            dt = DTYPES.index(out.dtype)
            res = self.unit(job, "sel", sel_q, n, [("c", m), ("a", res), ("b", z)], dt=dt)
        self.write_index(job, target, order, res)
        self.finish(job)

    # -- copies and movement ---------------------------------------------------------------------------
    def copy(self, src: Tensor, dst: Tensor) -> None:
        assert src.vectors == dst.vectors and src.dtype == dst.dtype
        if src.slice == dst.slice:  # one port cannot read and write a stream of vectors: go around
            via = self.new_tensor(f"{src.name}.via", TensorType(src.dtype, src.shape), avoid={src.slice})
            self.copy(src, via)
            src = via
        job = self.new_job()
        r = self.read(job, src, 0, src.vectors, 1)
        self.write(job, dst, 0, dst.vectors, 1, r)
        self.finish(job)

    def move(self, srcs: list[Tensor], t: TensorType, which: np.ndarray, index: np.ndarray) -> Tensor:
        """out element e = srcs[which[e]] element index[e] (flat, row-major)."""
        out = self.new_tensor("moved", t, avoid={s.slice for s in srcs})
        which = np.asarray(which).reshape(-1)
        index = np.asarray(index).reshape(-1)
        where = self._move_sources(srcs, out, which, index)
        done = self._transposes(srcs, out, where)
        plan = self._move_plan(srcs, where, done)
        # vectors copied unchanged, or each one lane map of one source vector: per source (and map),
        # one pipeline whose read and write are cut into runs of evenly spaced vectors
        mapped: dict[tuple, list[tuple[int, int]]] = {}  # (source, lane map) -> (output, source vector)
        several: dict[tuple, list] = {}  # ((source, lane map), ...) -> (output vector, source vectors)
        for v in range(len(plan)):
            if done[v] or not plan[v]:
                continue
            if self._is_copy(plan[v], v, out):
                s, sv, _ = plan[v][0]
                mapped.setdefault((s.id, None), []).append((v, sv))
            elif len(plan[v]) == 1:
                s, sv, m = plan[v][0]
                mapped.setdefault((s.id, tuple(m)), []).append((v, sv))
            else:
                key = tuple((s.id, tuple(m)) for s, _, m in plan[v])
                several.setdefault(key, []).append((v, [sv for _, sv, _ in plan[v]]))
        for key, vs in several.items():
            if len(vs) == 1 or not self._lane_sum(key, vs, out):
                for v, svs in vs:
                    self._gather(out, v, [(self.tensors[t], sv, list(m)) for (t, m), sv in zip(key, svs)])
        for (t_id, m), vs in mapped.items():
            s = self.tensors[t_id]
            pairs = np.array(vs, np.int64)
            job = self.new_job()
            res = self.read_index(job, s, pairs[:, 1])
            if m is not None:
                q = self.sxm_queue(self.x_of_slice(s.slice))
                res = self.unit(job, "perm", q, len(vs), [("a", res)], map=self.map_id(list(m)))
            self.write_index(job, out, pairs[:, 0], res)
            self.finish(job)
        return out

    def _lane_sum(self, key, vs, out: Tensor) -> bool:
        """Output vectors each the sum of the same lane maps of several sources' vectors (a rope's
        rotated halves): one pipeline, a read and a perm per source, added up, when the sources lie in
        different slices and the perms and adds get queues of their own (else False: nothing done)."""
        srcs = [self.tensors[t] for t, _ in key]
        if len({s.slice for s in srcs}) < len(srcs) or len(srcs) - 1 > self.chip.vxm_alu_queues:
            return False
        perm_q = [self.sxm_queue(self.x_of_slice(s.slice)) for s in srcs]
        add_q = [self.vxm_queue() for _ in srcs[1:]]
        if len(set(perm_q)) < len(perm_q) or len(set(add_q)) < len(add_q):
            return False
        n = len(vs)
        job = self.new_job()
        total = None
        for k, ((_, m), s) in enumerate(zip(key, srcs)):
            rd = self.read_index(job, s, np.array([svs[k] for _, svs in vs], np.int64))
            pm = self.unit(job, "perm", perm_q[k], n, [("a", rd)], map=self.map_id(list(m)))
            if total is None:
                total = pm
            else:
                dt = DTYPES.index(out.dtype)
                total = self.unit(job, "add", add_q[k - 1], n, [("a", total), ("b", pm)], dt=dt)
        self.write_index(job, out, np.array([v for v, _ in vs], np.int64), total)
        self.finish(job)
        return True

    def _move_sources(self, srcs: list[Tensor], out: Tensor, which: np.ndarray, index: np.ndarray):
        """For every (output vector, lane): whether it holds an element, which source, its vector and
        its lane there. Numpy over every (vector, lane) at once."""
        L = self.L
        vec = np.arange(out.rows * out.chunks)
        r, c = np.divmod(vec, out.chunks)
        lane = np.arange(L)
        col = np.zeros((len(vec), L), np.int64) if out.splat else c[:, None] * L + lane[None, :]
        valid = col < out.cols
        e = np.where(valid, r[:, None] * out.cols + col, 0)
        k = which[e]
        se = index[e]
        cols = np.array([s.cols for s in srcs], np.int64)[k]
        chunks = np.array([s.chunks for s in srcs], np.int64)[k]
        splat = np.array([s.splat for s in srcs], bool)[k]
        sr, sc = np.divmod(se, cols)
        sv = sr * chunks + sc // L
        s_lane = np.where(splat, np.broadcast_to(lane, valid.shape), sc % L)
        return valid, k, sv, s_lane

    def _transposes(self, srcs: list[Tensor], out: Tensor, where) -> np.ndarray:
        """Output vectors that are columns of a source (lane r = lane c of source vector base + r * step,
        r < R) go through the switch's transposer, 16 at once: `trans` turns 16 source vectors into
        16 whose lanes 16g + j hold lane 16g + r of source vector j, and a perm moves lanes 16g..16g+15
        of each to lanes 16b..16b+15 for the b-th block of 16 source vectors. 16 consecutive output
        vectors taking lanes 16g..16g+15 of the same source vectors are one job of four instructions
        when R <= 16 (instead of a read, a perm and an add per element): the transposed key cache of
        attention. Longer columns put each block in a temporary of its own slice and add the blocks
        in a second pass (`_sum_blocks`). Returns which output vectors it wrote."""
        valid, k, sv, s_lane = where
        L = self.L
        n_out = valid.shape[0]
        done = np.zeros(n_out, bool)
        if n_out < 16 or L % 16:
            return done
        R = valid.sum(axis=1)
        lane = np.arange(L)
        prefix = (valid == (lane[None, :] < R[:, None])).all(axis=1) & (R >= 2)
        step = sv[:, 1] - sv[:, 0] if L > 1 else np.zeros(n_out, np.int64)
        base, lam, k0 = sv[:, 0], s_lane[:, 0], k[:, 0]
        column = (
            prefix
            & (step > 0)
            & (~valid | ((k == k0[:, None]) & (s_lane == lam[:, None]))).all(axis=1)
            & (~valid | (sv == base[:, None] + lane[None, :] * step[:, None])).all(axis=1)
        )
        if not column.any():
            return done
        v = 0
        while v + 16 <= n_out:
            g = slice(v, v + 16)
            s = srcs[int(k0[v])]
            if not (
                column[g].all()
                and lam[v] % 16 == 0
                and (lam[g] == lam[v] + np.arange(16)).all()
                and (base[g] == base[v]).all()
                and (step[g] == step[v]).all()
                and (R[g] == R[v]).all()
                and (k0[g] == k0[v]).all()
                and s.dtype == out.dtype
                and not s.splat
                # 16 source vectors to read (a last short block overlaps the one before)
                and (R[v] >= 16 or base[v] + 15 * step[v] < s.vectors)
            ):
                v += 1
                continue
            blocks = -(-int(R[v]) // 16)
            if blocks == 1:
                self._trans_block(s, int(base[v]), int(step[v]), 0, 0, int(R[v]), int(lam[v]), out, v)
            else:
                self._sum_blocks(s, int(base[v]), int(step[v]), int(R[v]), int(lam[v]), out, v)
            done[g] = True
            v += 16
        return done

    def _trans_block(
        self, s: Tensor, base: int, step: int, r0: int, lo: int, hi: int, lam: int, dst: Tensor, at: int
    ) -> None:
        """Source vectors base + r * step for r in r0..r0+15 through the transposer: output vector
        at + i of `dst` gets, in lanes lo..hi-1, lane lam + i of those rows (the other lanes zero)."""
        L = self.L
        job = self.new_job()
        x = self.x_of_slice(s.slice)
        rd = self.read(job, s, base + r0 * step, 16, step)
        tr = self.unit(job, "trans", self.sxm_queue(x), 16, [("a", rd)])
        m = np.full(L, -1, np.int64)
        r = np.arange(lo, hi)
        m[r] = lam + (r - r0)
        pm = self.unit(job, "perm", self.sxm_queue(x), 16, [("a", tr)], map=self.map_id(m.tolist()))
        self.write(job, dst, at, 16, 1, pm)
        self.finish(job)

    def _sum_blocks(self, s: Tensor, base: int, step: int, R: int, lam: int, out: Tensor, at: int) -> None:
        """Columns of more than 16: each block of 16 through the transposer into a temporary, then
        the temporaries added 16 vectors at a time. The vectors of one addition come from different
        slices (one MEM port each) through a chain on different VXM queues; up to `width` at a time,
        folding into the next temporary (or, last, the output)."""
        L = self.L
        blocks = -(-R // 16)
        width = max(2, min(self.chip.vxm_alu_queues, len(self.slices) - 3, 8))
        part = TensorType(out.dtype, (16, L))
        keep = {s.slice, out.slice}
        acc: Tensor | None = None
        b = 0
        while b < blocks:
            chunk: list[Tensor] = []
            for _ in range(min(width - (acc is not None), blocks - b)):
                avoid = keep | {t.slice for t in chunk} | ({acc.slice} if acc is not None else set())
                t = self.new_tensor("transposed", part, avoid=avoid)
                self._trans_block(s, base, step, min(16 * b, R - 16), 16 * b, min(16 * b + 16, R), lam, t, 0)
                chunk.append(t)
                b += 1
            terms = ([acc] if acc is not None else []) + chunk
            if b == blocks:
                dst, first = out, at
            else:
                dst, first = self.new_tensor("transposed", part, avoid=keep | {t.slice for t in terms}), 0
            job = self.new_job()
            reads = [self.read(job, t, 0, 16, 1) for t in terms]
            total = reads[0]
            for r in reads[1:]:
                total = self.unit(
                    job, "add", self.vxm_queue(), 16, [("a", total), ("b", r)], dt=DTYPES.index(out.dtype)
                )
            self.write(job, dst, first, 16, 1, total)
            self.finish(job)
            acc = dst

    def _move_plan(self, srcs: list[Tensor], where, done: np.ndarray):
        """Per output vector (not `done`), its sources in order: [(src tensor, src vector, lane map),
        ...], a lane map giving for each output lane the source lane (-1: none)."""
        valid, k, sv, s_lane = where
        L = self.L
        lane = np.arange(L)
        n_out = valid.shape[0]
        any_valid = valid.any(axis=1)
        first = np.argmax(valid, axis=1)
        k0 = k[np.arange(n_out), first]
        sv0 = sv[np.arange(n_out), first]
        single = (~valid | ((k == k0[:, None]) & (sv == sv0[:, None]))).all(axis=1)
        maps = np.where(valid, s_lane, -1)
        plan = []
        for v in range(n_out):
            if done[v] or not any_valid[v]:
                plan.append([])
                continue
            if single[v]:  # one source vector (most moves): no grouping needed
                plan.append([(srcs[int(k0[v])], int(sv0[v]), maps[v].tolist())])
                continue
            ok = valid[v]
            keys = np.stack([k[v][ok], sv[v][ok]], axis=1)
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            lanes_ok = lane[ok]
            src_lanes = s_lane[v][ok]
            entry = []
            for g, (kk, vv) in enumerate(uniq.tolist()):
                m = np.full(L, -1, np.int64)
                sel = inverse == g
                m[lanes_ok[sel]] = src_lanes[sel]
                entry.append((srcs[kk], vv, m.tolist()))
            plan.append(entry)
        return plan

    def _is_copy(self, sources, v: int, out: Tensor) -> bool:
        if len(sources) != 1:
            return False
        s, sv, m = sources[0]
        if s.dtype != out.dtype:
            return False
        if m == self._identity:  # every lane from the same lane
            return True
        if not out.splat and not s.splat:  # the same lanes up to the output's width, then padding
            w = min(self.L, out.cols - (v % out.chunks) * self.L)
            if m[:w] == self._identity[:w] and m[w:] == self._none[w:]:
                return (sv % s.chunks) * self.L + w >= s.cols  # the source is padding there too
        for lane, src_lane in enumerate(m):
            if src_lane == lane:
                continue
            if src_lane != -1:
                return False
            # the output lane is padding: the source lane must be zero padding too
            if s.splat:
                return False
            c = sv % s.chunks
            if c * self.L + lane < s.cols:
                return False
        return True

    def chain(self, job: Job, pieces: list[int], op: str, dt: int, head: int | None = None) -> int:
        """Fold vectors that arrive one cycle apart: a mov (or `head`) starts the chain, each op
        takes the previous result and the next piece one cycle later, on one VXM queue."""
        vq = self.vxm_queue()
        acc = head if head is not None else self.unit(job, "mov", vq, 1, [("a", pieces[0])], dt=dt)
        for p in pieces[1 if head is None else 0 :]:
            acc = self.unit(job, op, vq, 1, [("a", acc), ("b", p)], dt=dt)
        return acc

    def _gather(self, out: Tensor, v: int, sources) -> None:
        job = self.new_job()
        dt = DTYPES.index(out.dtype)
        pieces = []
        for s, sv, m in sources:
            rd = self.read(job, s, sv, 1, 1)
            pieces.append(
                self.unit(
                    job, "perm", self.sxm_queue(self.x_of_slice(s.slice)), 1, [("a", rd)], map=self.map_id(m)
                )
            )
        if not pieces:  # an all-padding vector: zeros
            zero = self.const(out.dtype, (), np.zeros(()), avoid={out.slice})
            pieces = [self.read(job, zero, 0, 1, 0)]
        acc = pieces[0] if len(pieces) == 1 else self.chain(job, pieces, "add", dt)
        self.write(job, out, v, 1, 1, acc)
        self.finish(job)

    # -- reductions ------------------------------------------------------------------------------------
    def reduce(self, op: Op) -> Tensor:
        src = self.tensor(op.operands[0])
        rank = len(src.shape)
        axis = op.attr("axis")
        listed = (axis,) if isinstance(axis, int) else axis
        axes = set(range(rank)) if axis is None else {a % rank for a in listed}
        kind = "max" if op.name == "reduce_max" else "sum"
        out_t = op.result.type
        keep_shape = tuple(1 if a in axes else d for a, d in enumerate(src.shape))
        cur = src
        if rank and (rank - 1) in axes and not src.splat:
            cur = self.reduce_lanes(cur, kind)  # shape [..., 1], splat
        others = [a for a in axes if a != rank - 1 and cur.shape[a] > 1]
        if others:
            cur = self.reduce_rows(cur, kind, set(others))
        if cur is src:
            res = self.new_tensor("r", TensorType(src.dtype, keep_shape), avoid={src.slice})
            self.copy(src, res)
            cur = res
        # cur has the keepdims shape; relayout if the result's layout differs
        if out_t.shape != cur.shape:
            if (math.prod(out_t.shape[:-1]) if out_t.shape else 1, out_t.shape[-1] if out_t.shape else 1) == (
                cur.rows,
                cur.cols,
            ):
                cur = cur.view(out_t.shape)
            else:
                index = np.arange(cur.rows * cur.cols).reshape(out_t.shape)
                cur = self.move([cur], out_t, np.zeros_like(index), index)
        return cur

    def neutral(self, dtype: str, kind: str) -> float:
        if kind == "sum":
            return 0.0
        if dtype in ("f32", "f16", "bf16"):
            return -math.inf
        return {"i8": -128.0, "i32": -(2.0**31), "bool": 0.0}[dtype]

    def reduce_lanes(self, src: Tensor, kind: str) -> Tensor:
        """Reduce the last axis: [..., C] -> [..., 1] (splat): fold a row's vectors, then the lanes."""
        L = self.L
        out = self.new_tensor("rl", TensorType(src.dtype, src.shape[:-1] + (1,)), avoid={src.slice})
        dt = DTYPES.index(src.dtype)
        op = "add" if kind == "sum" else "max"
        tail = src.cols % L
        masked = kind == "max" and tail != 0  # padding zeros would win a max of negatives
        if masked:
            busy = {src.slice, out.slice}
            mask_t = self.const("bool", (L,), (np.arange(L) < tail).astype(np.float64), avoid=busy)
            fill_t = self.const(
                src.dtype, (), np.array(self.neutral(src.dtype, kind)), avoid=busy | {mask_t.slice}
            )
        if src.chunks == 1:  # a vector per row: every row at once, each lane-reduced on its own
            job = self.new_job()
            n = src.rows
            acc = self.read(job, src, 0, n, 1)
            if masked:
                m = self.read(job, mask_t, 0, n, 0)
                f = self.read(job, fill_t, 0, n, 0)
                acc = self.unit(job, "sel", self.vxm_queue(), n, [("c", m), ("a", acc), ("b", f)], dt=dt)
            sq = self.sxm_queue(self.x_of_slice(src.slice))
            red = self.unit(job, "lred", sq, n, [("a", acc)], red=ENUMS["reduce"].index(kind), dt=dt)
            self.write(job, out, 0, n, 1, red)
            self.finish(job)
            return out
        for r in range(src.rows):
            job = self.new_job()
            order = list(range(src.chunks))
            head = None
            if masked:  # the masked chunk goes first, through a sel that starts the chain
                order = [order[-1]] + order[:-1]
                rd = self.read(job, src, r * src.chunks + order[0], 1, 1)
                m = self.read(job, mask_t, 0, 1, 0)
                f = self.read(job, fill_t, 0, 1, 0)
                head = self.unit(job, "sel", self.vxm_queue(), 1, [("c", m), ("a", rd), ("b", f)], dt=dt)
                order = order[1:]
            pieces = [self.read(job, src, r * src.chunks + c, 1, 1) for c in order]
            if head is None and len(pieces) == 1:
                acc = pieces[0]
            else:
                acc = self.chain(job, pieces, op, dt, head=head) if pieces else head
            red = self.unit(
                job,
                "lred",
                self.sxm_queue(self.x_of_slice(src.slice)),
                1,
                [("a", acc)],
                red=ENUMS["reduce"].index(kind),
                dt=dt,
            )
            self.write(job, out, r, 1, 1, red)
            self.finish(job)
        return out

    def reduce_rows(self, src: Tensor, kind: str, axes: set[int]) -> Tensor:
        """Reduce leading axes: each output vector folds its input vectors."""
        shape = tuple(1 if a in axes else d for a, d in enumerate(src.shape))
        out = self.new_tensor("rr", TensorType(src.dtype, shape), avoid={src.slice})
        groups: dict[int, list[int]] = {}
        out_rows = np.arange(out.rows).reshape(shape[:-1]) if len(shape) > 1 else np.arange(1)
        for r, idx in enumerate(np.ndindex(*src.shape[:-1])):
            o = tuple(0 if a in axes else i for a, i in enumerate(idx))
            groups.setdefault(int(out_rows[o]), []).append(r)
        dt = DTYPES.index(src.dtype)
        op = "add" if kind == "sum" else "max"
        for o_row, in_rows in sorted(groups.items()):
            for c in range(src.chunks):
                job = self.new_job()
                pieces = [self.read(job, src, ir * src.chunks + c, 1, 1) for ir in in_rows]
                acc = pieces[0] if len(pieces) == 1 else self.chain(job, pieces, op, dt)
                self.write(job, out, o_row * out.chunks + c, 1, 1, acc)
                self.finish(job)
        return out

    # -- run-time addressing ------------------------------------------------------------------------
    def gather(self, op: Op) -> Tensor:
        """Rows of a table at run-time ids: per id, its lane moved to lane 0 of a vector that
        addresses a MEM gather of the id's whole block of vectors."""
        table, ids = (self.tensor(o) for o in op.operands)
        out_t = op.result.type
        if len(table.shape) < 2:
            # one element per id: give every element its own (splat) vector, gather those, move back
            v = table.shape[0]
            column = self.move(
                [table],
                TensorType(table.dtype, (v, 1)),
                np.zeros((v, 1), np.int64),
                np.arange(v).reshape(v, 1),
            )
            rows = self._gather_rows(column, ids, TensorType(out_t.dtype, out_t.shape + (1,)), None)
            index = np.arange(rows.vectors).reshape(out_t.shape)
            return self.move([rows], out_t, np.zeros_like(index), index)
        return self._gather_rows(table, ids, out_t, op.result.name)

    def _gather_rows(self, table: Tensor, ids: Tensor, out_t: TensorType, name: str | None) -> Tensor:
        if table.slice == ids.slice:
            moved = self.new_tensor(f"{ids.name}.copy", TensorType(ids.dtype, ids.shape), avoid={table.slice})
            self.copy(ids, moved)
            ids = moved
        out = self.new_tensor(name or "g", out_t, avoid={table.slice, ids.slice})
        block = table.vectors // table.shape[0]  # vectors per table row (of axis 0)
        for e in range(max(1, int(np.prod(ids.shape)))):
            r, col = divmod(e, ids.cols)
            lane = 0 if ids.splat else col % self.L
            job = self.new_job()
            rd = self.read(job, ids, r * ids.chunks + (0 if ids.splat else col // self.L), block, 0)
            idx = self.unit(
                job, "bcast", self.sxm_queue(self.x_of_slice(ids.slice)), block, [("a", rd)], lane=lane
            )
            q = self.queue_index[table.slice]
            g = job.add(
                Node(
                    "gather",
                    q,
                    self.queue_x[q],
                    block,
                    {"step": block * table.width, "dt": DTYPES.index(table.dtype)},
                    inputs=[("idx", idx)],
                    mem=(table.id, 0, 1),
                    dynamic=True,
                )
            )
            self.write(job, out, e * block, block, 1, g)
            self.finish(job)
        return out

    def update_slice(self, op: Op) -> Tensor:
        """A copy of the target, then the value scattered in at a run-time offset along `axis`. A state
        whose old value nothing else reads and which the result is committed to (a KV cache in a
        decode step: `in_place`) is not copied: the value is scattered into the state's own words,
        and the commit has nothing left to do."""
        x, v, index = (self.tensor(o) for o in op.operands)
        axis = op.attr("axis") % len(x.shape)
        if axis == len(x.shape) - 1:
            return self._update_last_axis(op, x, v, index)
        if id(op) in self.in_place:
            assert x.kind == "state"
            out = x
        else:
            busy = {x.slice, v.slice, index.slice}
            out = self.new_tensor(op.result.name or "u", op.result.type, avoid=busy)
            self.copy(x, out)
        if index.slice == out.slice:  # the scatter's port writes the target: its operands come from others
            moved = self.new_tensor(
                f"{index.name}.copy", TensorType(index.dtype, index.shape), avoid={out.slice}
            )
            self.copy(index, moved)
            index = moved
        if v.slice in (index.slice, out.slice):
            moved = self.new_tensor(
                f"{v.name}.copy", TensorType(v.dtype, v.shape), avoid={index.slice, out.slice}
            )
            self.copy(v, moved)
            v = moved
        outer = int(np.prod(x.shape[:axis]))
        inner = int(np.prod(x.shape[axis + 1 : -1]))
        rows_x, rows_v = x.shape[axis], v.shape[axis]
        per_row = inner * out.chunks  # vectors from one index of `axis` to the next
        for o in range(outer):
            n = rows_v * per_row
            job = self.new_job()
            data = self.read(job, v, o * n, n, 1)
            at = self.read(job, index, 0, n, 0)
            q = self.queue_index[out.slice]
            job.add(
                Node(
                    "scatter",
                    q,
                    self.queue_x[q],
                    n,
                    {"step": per_row * out.width, "dt": DTYPES.index(out.dtype)},
                    inputs=[("idx", at), ("a", data)],
                    mem=(out.id, o * rows_x * per_row, 1),
                    dynamic=True,
                )
            )
            self.finish(job)
        return out

    MAX_LANE_OFFSETS = 64

    def _update_last_axis(self, op: Op, x: Tensor, v: Tensor, index: Tensor) -> Tensor:
        """update_slice along the last axis: lanes would move by a run-time amount, which no unit does;
        instead build the result for every possible offset (static lane moves) and select the one
        whose offset equals the index: res = where(index == k, candidate_k, res)."""
        cols, width = x.cols, v.cols
        offsets = cols - width + 1
        if offsets > self.MAX_LANE_OFFSETS:
            raise error(
                f"update_slice along the last axis has {offsets} possible offsets; the chip code selects "
                f"among at most {self.MAX_LANE_OFFSETS} (put the updated axis before the last)",
                op.loc,
            )
        rows = x.rows
        out_t = op.result.type
        res_val: Value | None = None
        idx_val = Value(TensorType("i32", ()), "index")
        self.values[id(idx_val)] = index
        for k in range(offsets):
            col = np.arange(cols)
            inside = (col >= k) & (col < k + width)
            which = np.broadcast_to(inside.astype(np.int64), (rows, cols))
            from_x = np.arange(rows)[:, None] * cols + col[None, :]
            from_v = np.arange(rows)[:, None] * width + np.clip(col - k, 0, width - 1)[None, :]
            src = np.where(which == 1, from_v, from_x)
            cand = self.move([x, v], out_t, which.reshape(out_t.shape), src.reshape(out_t.shape))
            if res_val is None:
                res_val = Value(out_t, f"u{k}")
                self.values[id(res_val)] = cand
                continue
            k_val = Value(TensorType("i32", ()), f"k{k}")
            self.values[id(k_val)] = self.const("i32", (), np.array(float(k)))
            hit = Value(TensorType("bool", ()), f"hit{k}")
            self.values[id(hit)] = self.elementwise(Op("equal", (idx_val, k_val), hit, (), op.loc))
            cand_val = Value(out_t, f"cand{k}")
            self.values[id(cand_val)] = cand
            new = Value(out_t, f"u{k}")
            self.values[id(new)] = self.elementwise(Op("where", (hit, cand_val, res_val), new, (), op.loc))
            res_val = new
        return self.values[id(res_val)]

    # -- matmul ------------------------------------------------------------------------------------
    def matmul(self, op: Op) -> Tensor:
        a, b = (self.tensor(o) for o in op.operands)
        if a.splat:
            # one column, held in every lane: a pass multiplies all its K lanes, and inf or NaN in
            # a lane without a weight row would make NaN of 0 * inf; keep lane 0 only
            lane0 = self.new_tensor(f"{a.name}.lane0", TensorType(a.dtype, a.shape), avoid={a.slice, b.slice})
            job = self.new_job()
            rd = self.read(job, a, 0, a.vectors, 1)
            keep = [0] + [-1] * (self.L - 1)
            pm = self.unit(
                job,
                "perm",
                self.sxm_queue(self.x_of_slice(a.slice)),
                a.vectors,
                [("a", rd)],
                map=self.map_id(keep),
            )
            self.write(job, lane0, 0, a.vectors, 1, pm)
            self.finish(job)
            a = lane0
        if a.slice == b.slice and a is not b:
            moved = self.new_tensor(f"{b.name}.copy", TensorType(b.dtype, b.shape), avoid={a.slice})
            self.copy(b, moved)
            b = moved
        out_t = op.result.type
        out = self.new_tensor(op.result.name or "mm", out_t, avoid={a.slice, b.slice})
        out.chunk_major = out.rows > 1 and out.chunks > 1  # written a column chunk of rows at a time
        M, K = a.shape[-2], a.shape[-1]
        # a row block of a blocked weight multiplies a's columns from a_cols on (whole vectors), in place
        a_cols = dict(op.attrs).get("a_cols")
        if a_cols is not None:
            assert a_cols % self.L == 0, a_cols
            K = b.shape[-2]
        kt = self.chip.mxm_k(a.dtype)
        # weight-only quantisation: b's int8 rows are converted on the VXM on their way to the
        # matrix unit (read -> cvt -> lw), so no converted copy is stored
        dequant = dict(op.attrs).get("dequant")
        batch = out_t.shape[:-2]
        a_b, b_b = _batch_index(a.shape[:-2], batch), _batch_index(b.shape[:-2], batch)
        slots = self.chip.mxm_acc_slots
        # the planes of one hemisphere stand at one position: one activation stream feeds them all,
        # each multiplying its own column chunk
        per_side = self.chip.mxm_planes_per_hemisphere
        for bi in range(len(a_b)):
            ab, bb = int(a_b[bi]), int(b_b[bi])
            self.start_sides(bi)
            one = self.one_plane(op, M, kt)
            width = 1 if one else per_side
            for nc0 in range(0, out.chunks, width):
                ncs = list(range(nc0, min(nc0 + width, out.chunks)))
                for m0 in range(0, M, slots):
                    rows = min(slots, M - m0)
                    self._matmul_block(a, b, out, ab, bb, bi, ncs, m0, rows, M, K, kt, dequant, a_cols, one)
        return out

    def count_matmul(self, op: Op) -> None:
        """Before lowering: count a matmul against its activation (`siblings`, for `one_plane`)."""
        if op.name == "matmul":
            key = id(op.operands[0])
            self.siblings[key] = self.siblings.get(key, 0) + 1

    def _charge(self, side: str, planes: list[int], rows: int) -> None:
        """Count `rows` weight rows loaded on each of `planes` of `side` (what the choices balance)."""
        rr = self._rr
        rr[("lw", side)] = rr.get(("lw", side), 0) + len(planes) * rows
        for p in planes:
            rr[("lw", side, p)] = rr.get(("lw", side, p), 0) + rows

    def one_plane(self, op: Op, rows: int, kt: int) -> tuple[str, int] | None:
        """The plane a matmul goes on whole (its column chunks one after another), or None to spread
        its blocks over the planes (`side`).

        A weight sits in one MEM slice, whose one port gives one row per cycle: two planes loading
        chunks of the same weight take turns on it. When the matmul has fewer rows than a tile
        (loading its weights takes longer than passing its rows) and its activation feeds several
        matmuls (a big weight's blocks, cut by the partitioner, or projections of one input), those
        matmuls are ready together: each on one plane, the plane that has loaded fewest rows,
        several weights (several ports) stream at once. On two of Llama-70B's stages decode took
        322,384 -> 282,563 cycles; a GPT-2 d768 on one chip 25,508 -> 26,045, whose few matmuls
        balance four planes less well whole (benchmarks/planes.py)."""
        n = self.one_plane_siblings
        if not n or rows >= kt or self.siblings.get(id(op.operands[0]), 0) < n:
            return None
        rr = self._rr
        per_side = self.chip.mxm_planes_per_hemisphere
        loads = {(s, p): rr.get(("lw", s, p), 0) for s in ("w", "e") for p in range(per_side)}
        return min(loads, key=loads.get)

    def side(self, planes: int, rows: int) -> tuple[str, list[int]]:
        """The hemisphere and planes for the next block of a matmul (`planes` planes each loading
        `rows` weight rows): a matmul's blocks take turns between the sides, so that they run side
        by side (`start_sides` says where each batch index starts); on its side, a block with fewer
        column chunks than planes takes the planes that have loaded fewest rows (else a matmul of
        one column chunk would always take plane 0: Llama-70B's stages loaded 7x the rows on plane
        0 as on plane 1 of each side)."""
        rr = self._rr
        side = ("w", "e")[rr["plane"] % 2]
        rr["plane"] += 1
        per_side = self.chip.mxm_planes_per_hemisphere
        if planes < per_side and self.balance_sides:
            chosen = sorted(sorted(range(per_side), key=lambda p: rr.get(("lw", side, p), 0))[:planes])
        else:
            chosen = list(range(planes))
        self._charge(side, chosen, rows)
        return side, chosen

    def start_sides(self, batch_index: int) -> None:
        """Where the blocks of a matmul's batch index start taking turns: the first on the side whose
        planes have loaded fewer weight rows so far (on a tie, the one whose turn it is), each next
        one on the other side than the one before started on.

        So the sides' weight rows never part by more than one block's (a batch index's blocks load
        no more rows each than the one before, and two batch indices in a row cancel out). When
        the turns ran on from matmul to matmul, matmuls with an even number of blocks of unequal
        sizes, or large and small weights in turn, put up to 1.5x the rows on one side as on the
        other in every layer (Llama-70B's). Starting every batch index on the lighter side instead
        would put a run of small batched blocks (attention heads) all on one side."""
        rr = self._rr
        if batch_index == 0:
            w, e = rr.get(("lw", "w"), 0), rr.get(("lw", "e"), 0)
            if w != e and self.balance_sides:
                rr["plane"] = 0 if w < e else 1
            rr["start"] = rr["plane"] % 2
        elif self.balance_sides:
            rr["start"] = rr["plane"] = 1 - rr["start"]

    def _matmul_block(
        self, a, b, out, ab, bb, bi, ncs, m0, rows, M, K, kt, dequant=None, a_cols=None, one=None
    ):
        """Column chunks `ncs` of rows m0 .. m0 + rows, one plane each on one side, for all K-tiles
        (of a's columns from `a_cols` on, when given); on plane `one` (side, plane) when given."""
        if one is not None:
            side, planes = one[0], [one[1]]
            self._charge(side, planes, K)
        else:
            side, planes = self.side(len(ncs), K)
        queues = [[self.plane_queue(side, pl, r) for r in range(3)] for pl in planes]
        job = self.new_job()
        per_plane: list[dict[str, list[int]]] = [{"lw": [], "iw": [], "mm": [], "acc": []} for _ in ncs]
        prev_mm: list[int | None] = [None] * len(ncs)
        prev_iw: list[int | None] = [None] * len(ncs)
        dt_in = DTYPES.index(a.dtype)
        acc_dt = "i32" if a.dtype == "i8" else "f32"
        for t_i, k0 in enumerate(range(0, K, kt)):
            k_rows = min(kt, K - k0)
            iws = []
            for j, nc in enumerate(ncs):
                q_lw, q_iw, _ = queues[j]
                # weight rows k0 .. k0 + k_rows of b's batch bb, column chunk nc
                rd_w = self.read(job, b, (bb * K + k0) * b.chunks + nc, k_rows, b.chunks)
                if dequant:
                    to = {"dt": DTYPES.index(b.dtype), "to": DTYPES.index(dequant)}
                    rd_w = self.unit(job, "cvt", self.vxm_queue(), k_rows, [("a", rd_w)], **to)
                lw = self.unit(job, "lw", q_lw, k_rows, [("a", rd_w)], row=0)
                per_plane[j]["lw"].append(lw)
                if prev_iw[j] is not None:
                    job.nodes[lw].after.append((prev_iw[j], 1 - job.nodes[lw].spec.dskew))
                iw = self.unit(job, "iw", q_iw, 1, [])
                per_plane[j]["iw"].append(iw)
                job.nodes[iw].after.append((lw, job.nodes[lw].spec.dfunc + k_rows - 1))
                if prev_mm[j] is not None:
                    pm = job.nodes[prev_mm[j]]
                    # the previous pass must not see this install: ready after its last sample
                    job.nodes[iw].after.append((prev_mm[j], pm.spec.dskew + pm.n - job.nodes[iw].spec.dfunc))
                iws.append(iw)
            chunk, kof = divmod(k0 + (a_cols or 0), self.L)
            rd_a = self.read(job, a, (ab * M + m0) * a.chunks + chunk, rows, a.chunks)
            mode = ENUMS["mm_mode"].index("acc_set" if t_i == 0 else "acc_add")
            # the passes share one stream, so they sample on the same cycles: each waits for every install
            waits = [(iw, job.nodes[iw].spec.dfunc) for iw in iws] + [
                (m, 1) for m in prev_mm if m is not None
            ]
            for j in range(len(ncs)):
                node = self.unit(
                    job,
                    "mm",
                    queues[j][2],
                    rows,
                    [("a", rd_a)],
                    kof=kof,
                    slot=0,
                    mode=mode,
                    dt=dt_in,
                    to=DTYPES.index(acc_dt),
                )
                job.nodes[node].after.extend(waits)
                job.nodes[node].sources["w"] = iws[j]
                per_plane[j]["mm"].append(node)
                prev_mm[j], prev_iw[j] = node, iws[j]
        for j, nc in enumerate(ncs):
            acc = self.unit(job, "acc", queues[j][2], rows, [], slot=0, to=DTYPES.index(out.dtype))
            job.nodes[acc].after.append((prev_mm[j], job.nodes[prev_mm[j]].spec.dfunc))
            job.nodes[acc].sources["acc"] = prev_mm[j]
            per_plane[j]["acc"].append(acc)
            self.write(job, out, (bi * M + m0) * out.chunks + nc, rows, out.chunks, acc)
        self.finish(job)
        for pl, used in zip(planes, per_plane):
            self._hold_plane(job, side, pl, used)

    def _hold_plane(self, job: Job, side: str, plane: int, used: dict[str, list[int]]) -> None:
        """What a block holds of a plane (once its relative cycles are fixed), so that the blocks of
        other jobs on it may overlap it wherever they cannot disturb it: its shadow buffer from its
        first loaded row to its last install's sample, its array from its first install to its last
        pass's last sample, its accumulators from its first pass's first result to its drain's last
        read (the emulator's model of a plane, emulator/timing.py). Consecutive blocks on a plane so
        pipeline as the tiles of one block do; held whole, a one-tile block kept its plane for the
        reads before its load and the writes after its drain (twice its load)."""
        nodes = job.nodes
        lw, iw, mm, acc = (nodes[used[k][0]] for k in ("lw", "iw", "mm", "acc"))
        last_iw, last_mm, last_acc = nodes[used["iw"][-1]], nodes[used["mm"][-1]], nodes[used["acc"][-1]]
        windows = (
            (lw, "shadow", lw.rel + lw.spec.dfunc, last_iw.rel + last_iw.spec.dskew + 1),
            (iw, "array", iw.rel + iw.spec.dfunc, last_mm.rel + last_mm.spec.dskew + last_mm.n),
            (mm, "acc", mm.rel + mm.spec.dfunc, last_acc.rel + last_acc.spec.dskew + last_acc.n),
        )
        if self.hold_planes_whole:
            lo, hi = job.span()
            windows = ((lw, "plane", lo, hi),)
        for nd, what, start, end in windows:
            assert end > start, (job.name, what, start, end)
            nd.holds.append(((self.chip_index, what, side, plane), start - nd.rel, end - start))


def _batch_index(lead: tuple[int, ...], batch: tuple[int, ...]) -> np.ndarray:
    """For each output batch element (row-major), the operand's batch element it broadcasts from."""
    own = np.arange(math.prod(lead)).reshape(lead)
    return np.broadcast_to(own.reshape((1,) * (len(batch) - len(lead)) + lead), batch).reshape(-1)


__all__ = ["Lowering", "Tensor", "Unit", "Module", "Value"]

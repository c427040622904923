"""Hypothesis strategies that generate verified IR modules (public: use them in your own tests).

    from hypothesis import given
    from lpu.strategies import modules

    @given(modules(max_ops=6))
    def test_my_pass(m): ...

Modules are built op by op: a candidate op with operands drawn from the values
already defined is kept only when the verifier's rule accepts it, so every
generated module verifies. Shrinking removes ops, graphs and symbols and moves
towards small shapes and f32.
"""

from __future__ import annotations

from hypothesis import strategies as st

from compiler.ir import Commit, Global, Graph, Module, Op, TensorType, Value, freeze_attr
from compiler.ops import OpError, infer

ELEMENTWISE = (
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "neg",
    "relu",
    "exp",
    "log",
    "tanh",
    "sigmoid",
    "silu",
    "sqrt",
    "rsqrt",
    "recip",
    "gelu",
    "erf",
)
OTHERS = (
    "cast",
    "where",
    "less",
    "greater",
    "equal",
    "reduce_sum",
    "reduce_max",
    "reduce_mean",
    "softmax",
    "layernorm",
    "rmsnorm",
    "rope",
    "matmul",
    "reshape",
    "transpose",
    "concat",
    "slice",
    "gather",
    "constant",
    "iota",
    "update_slice",
)
ALL_OPS = ELEMENTWISE + OTHERS

_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)


def tensor_types(
    dtypes=("f32", "f16", "bf16", "i8", "i32", "bool"), max_rank: int = 3, max_dim: int = 6
) -> st.SearchStrategy[TensorType]:
    return st.builds(
        TensorType, st.sampled_from(dtypes), st.lists(st.integers(1, max_dim), max_size=max_rank).map(tuple)
    )


@st.composite
def _attrs_for(draw, name: str, types: list[TensorType]) -> dict:
    rank = types[0].rank if types else 0
    axis = st.integers(-rank, rank - 1) if rank else st.just(0)
    if name == "gelu":
        return draw(st.sampled_from([{}, {"approximate": "none"}, {"approximate": "tanh"}]))
    if name == "cast":
        return {"to": draw(st.sampled_from(["f32", "f16", "bf16", "i8", "i32", "bool"]))}
    if name.startswith("reduce_"):
        out = {}
        if rank and draw(st.booleans()):
            out["axis"] = draw(axis)
        if draw(st.booleans()):
            out["keepdims"] = draw(st.booleans())
        return out
    if name == "softmax":
        return {"axis": draw(axis)} if rank and draw(st.booleans()) else {}
    if name in ("layernorm", "rmsnorm"):
        return {"eps": draw(st.sampled_from([1e-5, 1e-6, 0.001]))} if draw(st.booleans()) else {}
    if name == "transpose":
        perm = draw(st.permutations(list(range(rank))))
        return {"perm": tuple(perm)}
    if name in ("concat", "update_slice"):
        return {"axis": draw(axis)}
    if name == "slice":
        a = draw(axis)
        dim = types[0].shape[a] if rank else 1
        start = draw(st.integers(0, max(dim - 1, 0)))
        return {"axis": a, "start": start, "stop": draw(st.integers(start + 1, max(dim, start + 1)))}
    return {}


@st.composite
def _op(draw, name: str, pool: list, fresh) -> Op | None:
    """One candidate op over values in `pool`; None when the rule rejects it.

    Operands are chosen to fit the op (same dtype, matching inner dimension, a
    bool condition, ...); where the pool has nothing that fits, `fresh(type)`
    adds a new graph argument of that type.
    """

    def pick(pred, make: TensorType | None = None):
        fits = [v for v in pool if pred(v.type)]
        if fits and (make is None or draw(st.integers(0, 3))):
            return draw(st.sampled_from(fits))
        return fresh(make) if make is not None else None

    floats = ("f32", "f16", "bf16")
    binary = ("add", "sub", "mul", "div", "max", "min", "less", "greater", "equal")
    declared = None
    if name in ("constant", "iota"):
        operands = []
    elif not pool:
        return None
    else:
        first = draw(st.sampled_from(pool))
        t = first.type
        if name in binary:
            if t.rank and draw(st.booleans()):
                other = TensorType(t.dtype, t.shape[draw(st.integers(0, t.rank)) :])
            else:
                other = t
            operands = [first, pick(lambda u: u == other, other)]
            if draw(st.booleans()):
                operands.reverse()
        elif name == "where":
            operands = [
                pick(lambda u: u.dtype == "bool" and u.shape == t.shape, TensorType("bool", t.shape)),
                first,
                pick(lambda u: u == t, t),
            ]
        elif name in ("layernorm", "rmsnorm"):
            if t.dtype not in floats or t.rank == 0:
                return None
            g = TensorType(t.dtype, (t.shape[-1],))
            operands = [first] + [pick(lambda u: u == g, g)] * (2 if name == "layernorm" else 1)
        elif name == "rope":
            if t.dtype not in floats or t.rank == 0 or t.shape[-1] % 2:
                return None
            cs = TensorType(t.dtype, t.shape[-2:] if t.rank >= 2 else t.shape)
            operands = [first, pick(lambda u: u == cs, cs), pick(lambda u: u == cs, cs)]
        elif name == "matmul":
            if t.dtype not in ("i8", "f16", "bf16") or t.rank < 2:
                return None
            k = t.shape[-1]
            b = TensorType(t.dtype, (k, draw(st.integers(1, 5))))
            operands = [first, pick(lambda u: u.dtype == t.dtype and u.rank >= 2 and u.shape[-2] == k, b)]
        elif name == "gather":
            if t.rank == 0:
                return None
            ids = TensorType("i32", tuple(draw(st.lists(st.integers(1, 4), max_size=2))))
            operands = [first, pick(lambda u: u.dtype == "i32", ids)]
        elif name == "update_slice":
            if t.rank == 0:
                return None
            axis = draw(st.integers(0, t.rank - 1))
            shape = list(t.shape)
            shape[axis] = draw(st.integers(1, t.shape[axis]))
            v = TensorType(t.dtype, tuple(shape))
            scalar = TensorType("i32", ())
            operands = [first, pick(lambda u: u == v, v), pick(lambda u: u == scalar, scalar)]
        elif name == "concat":
            operands = [first] * draw(st.integers(1, 3))
        else:
            operands = [first]
    types = [o.type for o in operands]
    attrs = draw(_attrs_for(name, types))
    if name == "update_slice":
        attrs = {
            "axis": next(
                a
                for a in range(types[0].rank)
                if types[1].shape[a] <= types[0].shape[a]
                and all(types[1].shape[b] == types[0].shape[b] for b in range(types[0].rank) if b != a)
            )
        }
    if name in ("constant", "iota"):
        declared = draw(
            tensor_types(
                ("f32", "f16", "i32") if name == "iota" else ("f32", "f16", "bf16", "i32", "bool"),
                max_rank=2,
                max_dim=4,
            )
        )
        if name == "iota":
            if declared.rank == 0:
                return None
            attrs = {"axis": draw(st.integers(0, declared.rank - 1))}
        else:
            attrs = {"value": _scalar(draw, declared.dtype)}
    elif name == "reshape":
        t = types[0]
        shapes = [s for s in _factorisations(t.size) if s != t.shape] or [t.shape]
        declared = TensorType(t.dtype, draw(st.sampled_from(shapes)))
    try:
        result_type = infer(name, types, attrs, declared)
    except OpError:
        return None
    attrs = {k: freeze_attr(v) for k, v in attrs.items()}
    return Op(name, tuple(operands), Value(result_type, None), tuple(sorted(attrs.items())))


def _scalar(draw, dtype: str):
    if dtype == "bool":
        return draw(st.booleans())
    if dtype in ("i8", "i32"):
        return draw(st.integers(-100, 100))
    return draw(st.sampled_from([0.0, 1.0, -2.5, 0.125, 1e-05, float("-inf"), 3.0e4]))


def _factorisations(n: int) -> list[tuple[int, ...]]:
    out = [(n,)]
    for a in range(2, n + 1):
        if n % a == 0:
            out.append((a, n // a))
    return out[:6]


@st.composite
def graphs(
    draw,
    name: str,
    symbols: list[Global],
    max_ops: int = 8,
    ops=ALL_OPS,
    dtypes=("f32", "f16", "bf16", "i8", "i32"),
) -> Graph:
    args = [
        Value(t, f"in{k}") for k, t in enumerate(draw(st.lists(tensor_types(dtypes), min_size=1, max_size=3)))
    ]
    pool: list = list(args) + list(symbols)

    def fresh(t: TensorType) -> Value:
        v = Value(t, f"in{len(args)}")
        args.append(v)
        pool.append(v)
        return v

    body: list = []
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(_op(draw(st.sampled_from(ops)), pool, fresh))
        if op is not None:
            body.append(op)
            pool.append(op.result)
    for s in symbols:
        if s.kind == "state":
            same = [v for v in pool if v.type == s.type and v is not s]
            if same and draw(st.booleans()):
                body.append(Commit(s, draw(st.sampled_from(same))))
    produced = [op.result for op in body if isinstance(op, Op)] or pool
    results = draw(st.lists(st.sampled_from(produced), min_size=1, max_size=2))
    return Graph(name, tuple(args), tuple(r.type for r in results), tuple(body), tuple(results))


@st.composite
def modules(draw, max_ops: int = 8, max_graphs: int = 2, ops=ALL_OPS, states: bool = True) -> Module:
    """A verified module with a few params (and states, unless `states=False`) and one or more graphs."""
    names = draw(st.lists(_names, max_size=4, unique=True))
    kinds = ["param", "param", "state"] if states else ["param"]
    symbols = [Global(draw(st.sampled_from(kinds)), n, draw(tensor_types())) for n in names]
    graph_names = draw(st.lists(_names, min_size=1, max_size=max_graphs, unique=True))
    gs = [draw(graphs(g, symbols, max_ops=max_ops, ops=ops)) for g in graph_names]
    return Module(draw(_names), tuple(symbols), tuple(gs))


# Ops the one-chip compiler runs (all of them).
CHIP_OPS = ALL_OPS


@st.composite
def chips(draw):
    """A small, valid chip: few lanes, streams, slices and queues (shrinks towards the smallest)."""
    from isa.chip import TINY

    lanes = draw(st.sampled_from([16, 32]))
    k_f16 = draw(st.sampled_from([lanes // 2, lanes // 4]))
    return TINY.replace(
        name="random",
        lanes=lanes,
        streams_per_direction=draw(st.integers(4, 8)),
        mem_slices_per_hemisphere=draw(st.integers(3, 6)),
        mem_slice_bytes=lanes * draw(st.sampled_from([1024, 2048, 4096])),
        mxm_planes_per_hemisphere=draw(st.integers(1, 2)),
        mxm_k_i8=lanes,
        mxm_k_f16=k_f16,
        mxm_acc_slots=draw(st.sampled_from([4, 16, 64])),
        vxm_alu_queues=draw(st.integers(1, 4)),
        sxm_queues_per_hemisphere=draw(st.integers(1, 2)),
    )


def systems_of(chip):
    from isa.system import SystemConfig

    return SystemConfig(name=chip.name, chip=chip)


# -- many chips ----------------------------------------------------------------------------------

TOPOLOGIES = ("all", "ring", "line")


def links_for(topology: str, n: int) -> tuple[tuple[int, int], ...]:
    """Links of `n` chips: all to all, a ring, or a line (a ring missing one link: the ends are as far
    apart as can be, so transfers between them are forwarded)."""
    if n == 1:
        return ()
    if topology == "all":
        return tuple((a, b) for a in range(n) for b in range(a + 1, n))
    line = tuple((a, a + 1) for a in range(n - 1))
    return line + ((n - 1, 0),) if topology == "ring" and n > 2 else line


@st.composite
def systems(draw, chip=None, chips=(1, 2, 3, 4, 8), topologies=TOPOLOGIES):
    """A small system: 1-8 chips (of `chip`, default the tiny preset) all to all, in a ring or in a
    line, with short random link latencies and bandwidths (shrinks towards 1 chip, all to all)."""
    from isa.chip import TINY
    from isa.system import SystemConfig

    chip = TINY if chip is None else chip
    n = draw(st.sampled_from(chips))
    topology = draw(st.sampled_from(topologies))
    c2c = max(chip.c2c_links, 2 * -(-(n - 1) // 2))
    return SystemConfig(
        name=f"{topology}{n}",
        chip=chip.replace(c2c_links=c2c),
        chips=n,
        links=links_for(topology, n),
        link_latency_cycles=draw(st.integers(1, 40)),
        link_gbps=draw(st.sampled_from([100.0, 25.0, 400.0])),
        rx_buffer_depth=draw(st.integers(1, 2)),
    )


def splits(system) -> st.SearchStrategy[tuple[int, int]]:
    """A valid (tp, pp) for a system: tp * pp <= its chips (shrinks towards (1, 1))."""
    pairs = [(tp, pp) for tp in range(1, system.chips + 1) for pp in range(1, system.chips // tp + 1)]
    return st.sampled_from(pairs)


@st.composite
def blocks(draw, dtypes=("f16", "bf16")):
    """A transformer-like module: one or two layers of attention and/or MLP blocks with residuals,
    small dimensions that tensor parallelism may or may not divide, and params named like a model's.
    The graph is `main(%x: DT[S, D]) -> (DT[S, D])`."""
    dt = draw(st.sampled_from(dtypes))
    s = draw(st.sampled_from([1, 2, 4, 8]))
    heads = draw(st.sampled_from([1, 2, 4]))
    dh = draw(st.sampled_from([2, 4, 8]))
    d = heads * dh
    f = draw(st.sampled_from([d, 2 * d, 4 * d, 3 * d]))
    layers = draw(st.integers(1, 2))
    params: list[str] = []
    body: list[str] = []
    x = "x"
    for layer in range(layers):
        kinds = draw(st.sampled_from([("attn",), ("mlp",), ("attn", "mlp")]))
        for kind in kinds:
            p = f"l{layer}_{kind}"
            norm = draw(st.sampled_from(["layernorm", "rmsnorm", None]))
            h = x
            if norm == "layernorm":
                params += [f"param @{p}_g : {dt}[{d}]", f"param @{p}_b : {dt}[{d}]"]
                body.append(f"%{p}_n = layernorm(%{x}, @{p}_g, @{p}_b)")
                h = f"{p}_n"
            elif norm == "rmsnorm":
                params.append(f"param @{p}_g : {dt}[{d}]")
                body.append(f"%{p}_n = rmsnorm(%{x}, @{p}_g)")
                h = f"{p}_n"
            if kind == "mlp":
                act = draw(st.sampled_from(["gelu", "relu", "silu"]))
                params += [f"param @{p}_w1 : {dt}[{d}, {f}]", f"param @{p}_w2 : {dt}[{f}, {d}]"]
                body += [
                    f"%{p}_a = matmul(%{h}, @{p}_w1)",
                    f"%{p}_b = {act}(%{p}_a)",
                    f"%{p}_c = matmul(%{p}_b, @{p}_w2)",
                ]
                out = f"{p}_c"
            else:
                fused = draw(st.booleans())
                if fused:
                    params.append(f"param @{p}_qkv : {dt}[{d}, {3 * d}]")
                    body.append(f"%{p}_qkv = matmul(%{h}, @{p}_qkv)")
                    for k, name in enumerate("qkv"):
                        a, b = k * d, (k + 1) * d
                        body.append(f"%{p}_{name} = slice(%{p}_qkv) {{axis = 1, start = {a}, stop = {b}}}")
                else:
                    for name in "qkv":
                        params.append(f"param @{p}_w{name} : {dt}[{d}, {d}]")
                        body.append(f"%{p}_{name} = matmul(%{h}, @{p}_w{name})")
                for name in "qkv":
                    body.append(f"%{p}_{name}4 = reshape(%{p}_{name}) : {dt}[{s}, {heads}, {dh}]")
                body += [
                    f"%{p}_qh = transpose(%{p}_q4) {{perm = [1, 0, 2]}}",
                    f"%{p}_kt = transpose(%{p}_k4) {{perm = [1, 2, 0]}}",
                    f"%{p}_vh = transpose(%{p}_v4) {{perm = [1, 0, 2]}}",
                    f"%{p}_s = matmul(%{p}_qh, %{p}_kt)",
                    f"%{p}_scale = constant() {{value = {1 / dh**0.5}}} : {dt}[]",
                    f"%{p}_ss = mul(%{p}_s, %{p}_scale)",
                ]
                scores = f"{p}_ss"
                if draw(st.booleans()):
                    body += [
                        f"%{p}_row = iota() {{axis = 0}} : i32[{s}, {s}]",
                        f"%{p}_col = iota() {{axis = 1}} : i32[{s}, {s}]",
                        f"%{p}_fut = greater(%{p}_col, %{p}_row)",
                        f"%{p}_ninf = constant() {{value = -inf}} : {dt}[]",
                        f"%{p}_m = where(%{p}_fut, %{p}_ninf, %{p}_ss)",
                    ]
                    scores = f"{p}_m"
                params.append(f"param @{p}_wo : {dt}[{d}, {d}]")
                body += [
                    f"%{p}_p = softmax(%{scores}) {{axis = -1}}",
                    f"%{p}_o = matmul(%{p}_p, %{p}_vh)",
                    f"%{p}_ot = transpose(%{p}_o) {{perm = [1, 0, 2]}}",
                    f"%{p}_o2 = reshape(%{p}_ot) : {dt}[{s}, {d}]",
                    f"%{p}_out = matmul(%{p}_o2, @{p}_wo)",
                ]
                out = f"{p}_out"
            body.append(f"%{p}_y = add(%{x}, %{out})")
            x = f"{p}_y"
    text = "module block\n" + "\n".join(params) + f"\ngraph main(%x: {dt}[{s}, {d}]) -> ({dt}[{s}, {d}]) {{\n"
    text += "\n".join("  " + line for line in body) + f"\n  return %{x}\n}}\n"
    from compiler import parse

    return parse(text, "block.lpu")


# -- compiled programs and their mutations ----------------------------------------------------------


@st.composite
def compiled(draw, system=None, max_ops: int = 6):
    """(program, module, weights) for a random module compiled for a random small chip, or for
    `system` with a random (tp, pp) split. Modules the compiler refuses for a documented limit
    (SRAM, one MEM slice, streams, lanes moved by a run-time amount) are filtered out."""
    from hypothesis import assume

    from compiler.backend import compile_module
    from isa.diagnostics import LpuError
    from lpu.arrays import random_weights

    m = draw(modules(max_ops=max_ops, ops=CHIP_OPS, max_graphs=1))
    assume(
        not any(
            op.name == "update_slice" and op.attr("axis") % op.result.type.rank == op.result.type.rank - 1
            for g in m.graphs
            for op in g.ops
        )
    )
    if system is None:
        system, (tp, pp) = systems_of(draw(chips())), (1, 1)
    else:
        tp, pp = draw(splits(system))
    w = random_weights(m, draw(st.integers(0, 3)))
    try:
        program = compile_module(m, system, w, tp=tp, pp=pp)
    except LpuError:
        assume(False)
    return program, m, w


@st.composite
def mutations(draw, program):
    """One random single mutation of `program`, as `lpu fuzz --mutate` makes them: an issue cycle
    +-1..3, a stream field, an address by one vector, a send or receive moved or re-targeted.
    Returns (what changed, the mutated program)."""
    from lpu.mutate import mutants

    seed = draw(st.integers(0, 2**31 - 1))
    return next(iter(mutants(program, 1, seed)))

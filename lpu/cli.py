"""The `lpu` command line. Exit codes: 0 success, 1 the user's input is wrong, 2 usage error.

No Python traceback reaches the user: user errors print located diagnostics;
an internal failure prints one line naming it as our bug (LPU_DEBUG=1 shows the
traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

import numpy as np

from isa.diagnostics import LpuError, error


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except LpuError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lpu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # an internal bug: one clear line, never a traceback by default
        if os.environ.get("LPU_DEBUG"):
            traceback.print_exc()
        print(
            f"lpu: internal error: {type(e).__name__}: {e}\n"
            "This is a bug in lpu, not in your input; set LPU_DEBUG=1 to see where it happened.",
            file=sys.stderr,
        )
        return 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with the usage line
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lpu", description="Compile models onto LPU chips and check the schedules.")
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="parse and verify a .lpu file; print its canonical IR")
    c.add_argument("model", metavar="MODEL.lpu")
    c.set_defaults(run=cmd_check)

    e = sub.add_parser("eval", help="run a module on the reference interpreter (numpy)")
    e.add_argument("model", metavar="MODEL.lpu")
    e.add_argument("-w", "--weights", metavar="WEIGHTS.npz", help="weights (default: seeded random)")
    e.add_argument("--inputs", metavar="X.npz", help="inputs (default: seeded random)")
    e.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs out0, out1, ...")
    e.add_argument("--entry", metavar="NAME", help="graph to run (default: the only one, or main)")
    e.add_argument("--seed", type=int, default=0, help="seed for random weights and inputs")
    e.set_defaults(run=cmd_eval)

    i = sub.add_parser("isa", help="print the ISA reference (opcodes, timing, chip presets)")
    i.set_defaults(run=cmd_isa)

    k = sub.add_parser("compile", help="compile a module to a program file (every instruction on a cycle)")
    k.add_argument("model", metavar="MODEL.lpu")
    k.add_argument("-w", "--weights", metavar="WEIGHTS.npz", help="weights to put in the SRAM image")
    k.add_argument(
        "--random-weights",
        type=int,
        metavar="SEED",
        help="put seeded random weights in the image (as lpu eval makes them)",
    )
    k.add_argument("-o", "--output", metavar="PROG.lpuprog", required=True)
    k.add_argument(
        "--system", default="tiny", metavar="PRESET|FILE.toml", help="system to compile for (default: tiny)"
    )
    k.add_argument("--tp", type=int, metavar="T", help="tensor parallelism: chips per pipeline stage")
    k.add_argument("--pp", type=int, metavar="P", help="pipeline parallelism: number of stages")
    k.add_argument(
        "--chips",
        type=int,
        metavar="N",
        help="use at most N chips; without --tp/--pp, try the (tp, pp) splits and keep the fastest "
        "(default: all chips of the system)",
    )
    k.add_argument(
        "--timing-only",
        action="store_true",
        help="no weights: schedule alike pipeline stages once and reuse their placement, and store "
        "runs of alike stages once with the shifts of their copies (the same program once written "
        "out, for configurations too large to compile stage by stage)",
    )
    k.set_defaults(run=cmd_compile)

    a = sub.add_parser("asm", help="assemble a program listing (as lpu inspect prints it) into a program")
    a.add_argument("listing", metavar="LISTING")
    a.add_argument("-o", "--output", metavar="PROG.lpuprog", required=True)
    a.set_defaults(run=cmd_asm)

    n = sub.add_parser("inspect", help="print a program as a listing (cycle, chip, queue, instruction)")
    n.add_argument("program", metavar="PROG.lpuprog")
    n.add_argument("--data", action="store_true", help="also print the SRAM image (needed to reassemble)")
    n.add_argument("--chip", type=int, metavar="C", help="only instructions of chip C")
    n.add_argument("--unit", metavar="U", help="only a unit kind (MEM, VXM, ...) or one queue (vxm.q0)")
    n.add_argument("--cycles", metavar="A:B", help="only instructions issued in cycles A..B-1")
    n.add_argument(
        "--tensor",
        metavar="NAME",
        help="where a param, state, input, output or value lives and every instruction touching it",
    )
    n.add_argument("--waves", metavar="A:B", help="a per-cycle line trace of cycles A..B-1, a queue a column")
    n.add_argument("--entry", metavar="NAME", help="the entry for --waves (default: decode, main, the first)")
    n.set_defaults(run=cmd_inspect)

    rp = sub.add_parser("report", help="cycles, busy units, SRAM, links, lower bound, critical path")
    rp.add_argument("program", metavar="PROG.lpuprog")
    rp.add_argument("--entry", metavar="NAME", help="entry point (default: decode, main, or the first)")
    rp.add_argument("--json", action="store_true", help="print one JSON object")
    rp.add_argument("--plot", metavar="FILE.png", help="also draw a Gantt chart and utilisation (matplotlib)")
    rp.set_defaults(run=cmd_report)

    tr = sub.add_parser("trace", help="write a Perfetto / chrome://tracing trace of the schedule")
    tr.add_argument("program", metavar="PROG.lpuprog")
    tr.add_argument("-o", "--output", metavar="TRACE.json", required=True)
    tr.set_defaults(run=cmd_trace)

    fz = sub.add_parser("fuzz", help="differential fuzzing: random modules compiled, emulated and compared")
    fz.add_argument("--examples", type=int, default=200, metavar="N", help="cases to try (default 200)")
    fz.add_argument("--seed", type=int, default=0, metavar="S", help="the same seed gives the same cases")
    fz.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop starting rounds after this")
    fz.add_argument(
        "--system", metavar="PRESET|FILE.toml", help="this system with random splits (default: random chips)"
    )
    fz.add_argument("--jobs", type=int, default=1, metavar="J", help="processes (default 1)")
    fz.add_argument(
        "--mutate", type=int, nargs="?", const=20, metavar="K",
        help="mutation campaign: K random single mutations of each compiled case (default 20)",
    )  # fmt: skip
    fz.add_argument("--out", default="fuzz-failures", metavar="DIR", help="where failing cases are written")
    fz.add_argument("--replay", metavar="CASE.lpu", help="check a written case again (with --system, --seed)")
    fz.add_argument("--tp", type=int, default=1, help="with --replay: the case's split")
    fz.add_argument("--pp", type=int, default=1, help="with --replay: the case's split")
    fz.set_defaults(run=cmd_fuzz)

    r = sub.add_parser("run", help="emulate a program cycle by cycle and check its timing")
    r.add_argument("program", metavar="PROG.lpuprog")
    r.add_argument("--entry", metavar="NAME", help="entry point (default: the only one, or main)")
    r.add_argument("--inputs", metavar="X.npz", help="inputs (default: seeded random)")
    r.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs out0, out1, ...")
    r.add_argument("--seed", type=int, default=0, help="seed for random inputs")
    r.add_argument(
        "-w", "--weights", metavar="WEIGHTS.npz", help="weights, for a program compiled without them"
    )
    r.add_argument(
        "--check",
        action="store_true",
        help="compare the outputs with the reference interpreter (exit 1 on any difference)",
    )
    r.set_defaults(run=cmd_run)

    s = sub.add_parser("system", help="validate and describe a system (a name or a .toml file)")
    s.add_argument("system", metavar="PRESET|FILE.toml")
    s.set_defaults(run=cmd_system)

    mo = sub.add_parser("model", help="build a transformer (gpt2, llama, bert) as a .lpu module")
    mo.add_argument("family", choices=["gpt2", "llama", "bert"])
    mo.add_argument("-o", "--output", metavar="MODEL.lpu", required=True)
    mo.add_argument("-w", "--weights", metavar="WEIGHTS.npz", help="also write seeded random weights")
    mo.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    mo.add_argument("--layers", type=int, default=2)
    mo.add_argument("--d-model", type=int, default=64)
    mo.add_argument("--heads", type=int, default=4)
    mo.add_argument("--kv-heads", type=int, help="llama: key/value heads (default: --heads / 2 or 1)")
    mo.add_argument("--ffn", type=int, help="MLP width (default: 4 x d-model; llama 2 x)")
    mo.add_argument("--vocab", type=int, default=128)
    mo.add_argument("--max-seq", type=int, default=16)
    mo.add_argument(
        "--dtype", default="f16", choices=["f16", "bf16", "i8"], help="i8: int8 matrices with f16 scales"
    )
    mo.add_argument("--pooling", action="store_true", help="bert: also return the mean over positions")
    mo.set_defaults(run=cmd_model)

    im = sub.add_parser("import", help="import a Hugging Face checkpoint directory (gpt2, llama, bert)")
    im.add_argument("directory", metavar="DIR", help="config.json + model.safetensors (or shards + index)")
    im.add_argument("-o", "--output", metavar="MODEL.lpu", required=True)
    im.add_argument("-w", "--weights", metavar="WEIGHTS.npz", required=True)
    im.add_argument(
        "--dtype", default="f16", choices=["f16", "bf16", "i8"], help="cast (i8: quantize) the weights"
    )
    im.add_argument("--max-seq", type=int, help="positions to build for (default: the config's maximum)")
    im.set_defaults(run=cmd_import)

    ge = sub.add_parser("generate", help="prefill a prompt and decode greedily on the emulator")
    ge.add_argument("program", metavar="PROG.lpuprog")
    ge.add_argument("--prompt-ids", required=True, metavar="1,2,3", help="the prompt's token ids")
    ge.add_argument("--tokens", type=int, default=8, metavar="N", help="new tokens to generate")
    ge.add_argument("-w", "--weights", metavar="WEIGHTS.npz", help="weights, if not compiled in")
    ge.add_argument("--check", action="store_true", help="compare the ids with a numpy greedy decode")
    ge.set_defaults(run=cmd_generate)
    return p


def cmd_check(args) -> int:
    from compiler import parse_file, print_module

    sys.stdout.write(print_module(parse_file(args.model)))
    return 0


def cmd_eval(args) -> int:
    from compiler import parse_file
    from compiler.reference import Reference
    from lpu.arrays import check_arrays, load_npz, random_inputs, random_weights, save_npz

    module = parse_file(args.model)
    graph = _entry(module, args.entry, args.model)
    if args.weights:
        weights = check_arrays(load_npz(args.weights), module.params, filename=args.weights, what="param")
    else:
        weights = random_weights(module, args.seed)
    if args.inputs:
        inputs = check_arrays(load_npz(args.inputs), graph.args, filename=args.inputs, what="argument")
    else:
        inputs = random_inputs(module, graph, args.seed)
    outputs = Reference(module, weights).run(graph.name, inputs)
    for k, (out, t) in enumerate(zip(outputs, graph.result_types)):
        print(f"out{k} : {t}  {_summary(out)}")
    if args.output:
        save_npz(args.output, {f"out{k}": o for k, o in enumerate(outputs)})
        print(f"wrote {len(outputs)} output{'s' if len(outputs) != 1 else ''} to {args.output}")
    return 0


def _entry(module, name: str | None, filename: str):
    names = [g.name for g in module.graphs]
    if name is None:
        if len(names) == 1:
            return module.graphs[0]
        if "main" in names:
            return module.graph("main")
        raise error(
            f"module {module.name} has several graphs ({', '.join(names)}); choose one with --entry",
            filename=filename,
        )
    if name not in names:
        raise error(
            f"module {module.name} has no graph '{name}' (it has {', '.join(names)})", filename=filename
        )
    return module.graph(name)


def _summary(x: np.ndarray) -> str:
    flat = x.reshape(-1)
    head = ", ".join(_fmt(v) for v in flat[:4]) + (", ..." if flat.size > 4 else "")
    if x.dtype.kind == "f":
        f = flat.astype(np.float64)
        finite = f[np.isfinite(f)]
        stats = (
            f"mean {finite.mean():.6g}  min {finite.min():.6g}  max {finite.max():.6g}"
            if finite.size
            else "no finite values"
        )
        return f"[{head}]  {stats}"
    return f"[{head}]  sum {int(flat.astype(np.int64).sum())}"


def _fmt(v) -> str:
    if isinstance(v, (np.floating, float)):
        return f"{float(v):.6g}"
    if isinstance(v, (np.bool_, bool)):
        return "true" if v else "false"
    return str(int(v))


def cmd_compile(args) -> int:
    from compiler import parse_file
    from compiler.backend import compile_module
    from isa.program import save
    from isa.system import resolve_system
    from lpu.arrays import check_arrays, load_npz

    module = parse_file(args.model)
    system = resolve_system(args.system)
    weights = None
    if args.timing_only and (args.weights or args.random_weights is not None):
        raise error("--timing-only compiles without weights: drop -w/--random-weights")
    if args.weights:
        weights = check_arrays(load_npz(args.weights), module.params, filename=args.weights, what="param")
    elif args.random_weights is not None:
        from lpu.arrays import random_weights

        weights = random_weights(module, args.random_weights)
    tp, pp = _split(args, system)
    if tp is None:
        from compiler.backend import search

        best, tried, why = search(module, system, weights, args.chips or system.chips, args.timing_only)
        print(_candidates_table(tried, best, system.chip.clock_mhz))
        print(f"chose tp={best.tp} pp={best.pp}: {why}")
        program = best.program
    else:
        program = compile_module(module, system, weights, tp=tp, pp=pp, timing_only=args.timing_only)
    for warning in program.meta.get("warnings", []):
        print(warning, file=sys.stderr)
    save(program, args.output)
    cycles = program.length()
    clock = system.chip.clock_mhz
    used = program.meta.get("tp", 1) * program.meta.get("pp", 1)
    split = f" (tp={program.meta.get('tp', 1)} pp={program.meta.get('pp', 1)})" if system.chips > 1 else ""
    print(
        f"wrote {args.output}: {program.instructions()} instructions"
        + (f" ({len(program)} stored: alike stages once)" if len(program.repeats) else "")
        + f", {cycles} cycles "
        f"({cycles / clock:.3f} us at {clock:g} MHz) on {used} of the {system.chips} chip"
        f"{'s' if system.chips != 1 else ''} of {system.name}{split}"
        + ("" if weights is not None else " (no weights: give them to lpu run with -w)")
    )
    memo = program.meta.get("timing_only")
    if memo:
        copied = memo.get("stage_blocks_copied", 0)
        total = memo["stage_blocks_searched"] + memo["stage_blocks_reused"] + copied
        runs = ", ".join(
            f"{r[0]}..{r[1]}" + (f" every {r[2]}" if len(r) > 2 and r[2] > 1 else "")
            for r in memo.get("runs", [])
        )
        print(
            f"timing-only: {memo['stage_blocks_searched']} of {total} stage blocks searched, "
            f"{memo['stage_blocks_reused']} placed like an alike stage"
            + (f", {copied} stored once as copies (alike stages {runs})" if copied else "")
        )
    return 0


def _split(args, system) -> tuple[int | None, int | None]:
    """(tp, pp) from the flags; (None, None) when the splits are to be searched."""
    tp, pp, chips = args.tp, args.pp, args.chips
    for name, v in (("--tp", tp), ("--pp", pp), ("--chips", chips)):
        if v is not None and v < 1:
            raise error(f"{name} must be at least 1, got {v}")
    if chips is not None and chips > system.chips:
        raise error(
            f"--chips {chips}: system {system.name} has {system.chips} chip{'s' if system.chips != 1 else ''}"
        )
    if tp is None and pp is None:
        if system.chips == 1 or chips == 1:
            return 1, 1
        return None, None
    if chips is not None:
        if tp is None:
            tp = chips // pp
        if pp is None:
            pp = chips // tp
        if tp * pp != chips:
            raise error(f"--tp {tp} x --pp {pp} = {tp * pp} chips, not the {chips} of --chips")
    tp, pp = tp or 1, pp or 1
    if tp * pp > system.chips:
        raise error(f"--tp {tp} x --pp {pp} needs {tp * pp} chips; system {system.name} has {system.chips}")
    return tp, pp


def _candidates_table(tried, best, clock_mhz: float) -> str:
    lines = [f"{'tp':>3} {'pp':>3} {'chips':>5} {'cycles':>9} {'latency':>11} {'SRAM/chip':>12}  note"]
    for c in tried:
        if c.cycles is None:
            lines.append(f"{c.tp:>3} {c.pp:>3} {c.chips:>5} {'-':>9} {'-':>11} {'-':>12}  {c.problem}")
            continue
        mark = "<- chosen" if c is best else ""
        lines.append(
            f"{c.tp:>3} {c.pp:>3} {c.chips:>5} {c.cycles:>9} {c.cycles / clock_mhz:>9.3f}us "
            f"{c.sram_bytes_max:>12}  {mark}"
        )
    return "\n".join(lines)


def cmd_asm(args) -> int:
    from isa.assembly import assemble
    from isa.program import save

    try:
        with open(args.listing, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise error("the listing is not UTF-8 text", filename=args.listing) from None
    except OSError as e:
        raise error(f"cannot read listing: {e.strerror}", filename=args.listing) from None
    program = assemble(text, args.listing)
    save(program, args.output)
    print(f"wrote {args.output}: {len(program)} instructions")
    return 0


def _range(text: str, flag: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    try:
        return (int(lo) if lo else 0), (int(hi) if hi else 1 << 62)
    except ValueError:
        raise error(f"{flag} {text}: expected A:B with integers") from None


def cmd_fuzz(args) -> int:
    import time

    from isa.system import resolve_system
    from lpu import fuzz

    system = resolve_system(args.system) if args.system else None
    if args.replay:
        if system is None:
            raise error("--replay needs the case's --system (the .toml written beside it, or a preset)")
        problem = fuzz.replay(args.replay, system, args.tp, args.pp, args.seed)
        if problem:
            print(f"{args.replay}: fails: {problem}", file=sys.stderr)
            return 1
        print(f"{args.replay}: passes (compiled, emulated with no violations, outputs match the reference)")
        return 0
    for name, v in (("--examples", args.examples), ("--jobs", args.jobs)):
        if v < 1:
            raise error(f"{name} must be at least 1, got {v}")
    if args.mutate is not None and args.mutate < 1:
        raise error(f"--mutate must be at least 1, got {args.mutate}")
    started = time.monotonic()
    outcome = fuzz.campaign(
        args.examples,
        args.seed,
        system,
        jobs=args.jobs,
        time_budget=args.time_budget,
        mutate=args.mutate or 0,
        progress=lambda done, total, o: fuzz.report_progress(done, total, o, started),
    )
    took = time.monotonic() - started
    if sys.stderr.isatty():
        print(file=sys.stderr)
    where = args.system or "random chips"
    if args.mutate:
        rate = outcome.kill_rate
        print(
            f"mutation: {outcome.cases} programs on {where}, {outcome.mutants} mutants: "
            f"{outcome.caught_timing} caught by timing, {outcome.caught_values} by values, "
            f"{outcome.equivalent} equivalent, {len(outcome.survivors)} survived; kill rate "
            + (f"{rate:.4f}" if rate is not None else "n/a")
            + f" ({took:.1f} s)"
        )
        for k, (case, what) in enumerate(outcome.survivors[:20]):
            path, command = fuzz.write_case(case, args.out, f"survivor-{args.seed}-{k}", f"survived: {what}")
            print(f"survivor {what}: {path}\n  {command}", file=sys.stderr)
        return 1 if outcome.survivors else 0
    print(
        f"fuzz: {outcome.cases} cases on {where} in {took:.1f} s "
        f"({outcome.cases / max(took, 1e-9):.0f} cases/s), {len(outcome.failures)} failed"
    )
    for k, (case, problem) in enumerate(outcome.failures):
        path, command = fuzz.write_case(case, args.out, f"failure-{args.seed}-{k}", problem)
        print(f"failed: {problem}\n  shrunk case: {path}\n  reproduce: {command}", file=sys.stderr)
    return 1 if outcome.failures else 0


def cmd_report(args) -> int:
    import json

    from isa.program import load
    from lpu.report import render, report

    program = load(args.program)
    r = report(program, args.entry)
    if args.json:
        print(json.dumps(r.to_json(), sort_keys=True))
    else:
        sys.stdout.write(render(r))
    if args.plot:
        from lpu.plot import plot

        plot(program, r, args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def cmd_trace(args) -> int:
    import json

    from isa.files import write_atomically
    from isa.program import load
    from lpu.trace import trace_events

    program = load(args.program).expanded()  # copies of alike stages written out
    trace = trace_events(program)
    data = json.dumps(trace, separators=(",", ":")).encode()
    write_atomically(args.output, lambda f: f.write(data), ".json")
    count = sum(1 for e in trace["traceEvents"] if e.get("ph") == "X")
    print(f"wrote {args.output}: {count} instructions on {len(set(program.chip.tolist()))} chips")
    return 0


def cmd_inspect(args) -> int:
    from isa.assembly import disassemble, listing_order
    from isa.program import load

    program = load(args.program).expanded()  # copies of alike stages written out
    if args.waves:
        from lpu.inspect import line_trace
        from lpu.report import default_entry

        lo, hi = _range(args.waves, "--waves")
        entry = args.entry or default_entry(program)
        if entry not in program.entries:
            raise error(f"--entry {entry}: the program has {', '.join(program.entries)}")
        sys.stdout.write(line_trace(program, entry, lo, hi, args.chip))
        return 0
    order = listing_order(program)
    if args.tensor:
        from lpu.inspect import tensor_instructions

        where, touching = tensor_instructions(program, args.tensor)
        print("\n".join(f"# {w}" for w in where))
        order = touching
    queues = program.system.chip.queue_table()
    if args.chip is not None:
        order = order[program.chip[order] == args.chip]
    if args.unit:
        unit = args.unit
        names = {q.name for q in queues}
        kinds = {q.unit.value for q in queues}
        if unit.upper() in kinds:
            keep = [q.index for q in queues if q.unit.value == unit.upper()]
        elif unit in names:
            keep = [q.index for q in queues if q.name == unit]
        else:
            raise error(f"--unit {unit}: not a unit kind ({', '.join(sorted(kinds))}) or a queue name")
        order = order[np.isin(program.queue[order], keep)]
    if args.cycles:
        lo_c, hi_c = _range(args.cycles, "--cycles")
        order = order[(program.cycle[order] >= lo_c) & (program.cycle[order] < hi_c)]
    sys.stdout.write(disassemble(program, data=args.data, order=order, header=not args.tensor))
    return 0


def cmd_run(args) -> int:
    from emulator.run import Emulator
    from isa.numerics import STORAGE
    from isa.program import load
    from lpu.arrays import load_npz, save_npz

    program = load(args.program).expanded()  # copies of alike stages written out
    entries = list(program.entries)
    entry = args.entry or (entries[0] if len(entries) == 1 else "main" if "main" in entries else None)
    if entry is None:
        raise error(
            f"the program has several entries ({', '.join(entries)}); choose one with --entry",
            filename=args.program,
        )
    weights = None
    params = program.whole("param")
    timing_only = False
    if args.weights:
        weights = _check_placed(load_npz(args.weights), params, args.weights, "param")
    elif params and program.meta.get("timing_only") and not args.check:
        # timing needs no values: every read is checked against its intended source all the same
        timing_only = True
        weights = {name: np.zeros(shape, STORAGE[dtype]) for name, (dtype, shape) in params.items()}
        print("timing-only program without weights: params are zeros, timing is checked in full")
    elif params and not program.meta.get("weights", True):
        raise error(
            "the program was compiled without weights; give them with -w WEIGHTS.npz", filename=args.program
        )
    emu = Emulator(program, weights)
    wanted = program.whole("input", entry)
    if args.inputs:
        inputs = _check_placed(load_npz(args.inputs), wanted, args.inputs, "argument")
    else:
        rng = np.random.default_rng(args.seed)
        inputs = {
            name: (
                rng.standard_normal(shape) if dtype in ("f32", "f16", "bf16") else rng.integers(-8, 8, shape)
            ).astype(STORAGE[dtype])
            for name, (dtype, shape) in wanted.items()
        }
    result = emu.run(entry, inputs)
    clock = program.system.chip.clock_mhz
    print(
        f"{entry}: {result.cycles} cycles ({result.cycles / clock:.3f} us at {clock:g} MHz), "
        f"{len(program)} instructions, {result.steps} vector steps"
    )
    busy = ", ".join(f"{k} {v}" for k, v in result.busy.items() if v)
    print(f"busy cycles: {busy or 'none'}")
    if program.system.chips > 1:
        from lpu.api import link_vectors, link_wait_cycles

        e = program.entries.index(entry)
        vectors = [v for v in link_vectors(program) if program.entry[v.recv] == e]
        chips = len(set(program.chip[program.entry == e].tolist()))
        print(
            f"chips: {chips} of {program.system.chips}; links: {len(vectors)} vectors over "
            f"{len({v.link for v in vectors})} links, {link_wait_cycles(program, entry)} cycles with only "
            "links busy"
        )
    for k, out in enumerate(result.outputs):
        if not timing_only:
            print(f"out{k} : {_summary(out)}")
    if args.output:
        save_npz(args.output, {f"out{k}": o for k, o in enumerate(result.outputs)})
    failed = False
    if args.check:
        from lpu.api import check_outputs

        report = check_outputs(program, entry, inputs, result.outputs, weights)
        for line in report.lines:
            print(line, file=sys.stderr if not report.ok else sys.stdout)
        failed = not report.ok
    if result.violations:
        for v in result.violations[:50]:
            print(v.render(), file=sys.stderr)
        more = len(result.violations) - 50
        print(
            f"{len(result.violations)} timing violation{'s' if len(result.violations) != 1 else ''}"
            + (f" ({more} not shown)" if more > 0 else ""),
            file=sys.stderr,
        )
        return 1
    print("timing: no violations")
    return 1 if failed else 0


def _check_placed(arrays, placements: dict, filename: str, what: str):
    from compiler.ir import TensorType, Value
    from lpu.arrays import check_arrays

    wanted = [Value(TensorType(dtype, shape), name) for name, (dtype, shape) in placements.items()]
    return check_arrays(arrays, wanted, filename=filename, what=what)


def cmd_model(args) -> int:
    from isa.files import write_atomically
    from lpu.arrays import save_npz
    from models import FAMILIES

    module, config_class = FAMILIES[args.family]
    sizes = {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "vocab": args.vocab,
             "max_seq": args.max_seq, "dtype": args.dtype}  # fmt: skip
    sizes["ffn"] = args.ffn or (2 if args.family == "llama" else 4) * args.d_model
    if args.family == "llama":
        sizes["kv_heads"] = args.kv_heads or max(1, args.heads // 2)
    elif args.kv_heads is not None:
        raise error(f"--kv-heads: {args.family} has no grouped-query attention")
    if args.family == "bert":
        sizes["pooling"] = args.pooling
    elif args.pooling:
        raise error(f"--pooling is for bert, not {args.family}")
    config = config_class(**sizes)
    text = module.module_text(config)
    write_atomically(args.output, lambda f: f.write(text.encode()))
    params = sum(int(np.prod(s)) for s in module.param_shapes(config).values())
    print(f"wrote {args.output}: {args.family}, {params} parameters ({config})")
    if args.weights:
        save_npz(args.weights, module.random_weights(config, args.seed))
        print(f"wrote {args.weights}: seeded random weights (seed {args.seed})")
    return 0


def cmd_import(args) -> int:
    from isa.files import write_atomically
    from lpu.arrays import save_npz
    from models.checkpoint import import_checkpoint

    if args.max_seq is not None and args.max_seq < 1:
        raise error(f"--max-seq must be at least 1, got {args.max_seq}")
    family, config, text, weights = import_checkpoint(args.directory, args.dtype, args.max_seq)
    write_atomically(args.output, lambda f: f.write(text.encode()))
    save_npz(args.weights, weights)
    count = sum(int(np.prod(w.shape)) for w in weights.values())
    print(f"wrote {args.output} and {args.weights}: {family}, {count} parameters ({config})")
    return 0


def cmd_generate(args) -> int:
    from isa.program import load
    from lpu.api import generate_on_emulator, generate_on_reference
    from lpu.arrays import load_npz

    program = load(args.program).expanded()  # copies of alike stages written out
    try:
        prompt = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
    except ValueError:
        raise error(
            f"--prompt-ids {args.prompt_ids}: expected comma-separated integers such as 1,2,3"
        ) from None
    weights = None
    if args.weights:
        weights = _check_placed(load_npz(args.weights), program.whole("param"), args.weights, "param")
    elif program.whole("param") and not program.meta.get("weights", True):
        raise error(
            "the program was compiled without weights; give them with -w WEIGHTS.npz", filename=args.program
        )
    g = generate_on_emulator(program, prompt, args.tokens, weights)
    clock = g.clock_mhz
    print(f"prompt: {','.join(map(str, prompt))}")
    print(f"generated: {','.join(map(str, g.ids))}")
    print(f"prefill: {g.prefill_cycles} cycles ({g.prefill_cycles / clock:.3f} us at {clock:g} MHz)")
    if g.decode_cycles:
        per = sorted(g.decode_cycles)[len(g.decode_cycles) // 2]
        print(
            f"decode: {len(g.decode_cycles)} steps, {per} cycles per token = "
            f"{g.latency_per_token_s * 1e6:.3f} us per token, {g.tokens_per_s:,.0f} tokens/s"
        )
    failed = False
    if args.check:
        want = generate_on_reference(program, prompt, args.tokens, weights)
        if want == g.ids:
            print("check: the ids equal a numpy greedy decode (the reference interpreter) of the same model")
        else:
            k = next(i for i, (a, b) in enumerate(zip(want, g.ids)) if a != b)
            print(
                f"check: token {k} differs: emulated {g.ids[k]}, numpy {want[k]} "
                f"(numpy: {','.join(map(str, want))})",
                file=sys.stderr,
            )
            failed = True
    if g.violations:
        for v in g.violations[:20]:
            print(v.render(), file=sys.stderr)
        print(f"{len(g.violations)} timing violations", file=sys.stderr)
        return 1
    print("timing: no violations")
    return 1 if failed else 0


def cmd_isa(args) -> int:
    from isa.docs import render

    sys.stdout.write(render())
    return 0


def cmd_system(args) -> int:
    from isa.system import resolve_system

    s = resolve_system(args.system)
    c = s.chip
    print(
        f"system {s.name}: {s.chips} chip{'s' if s.chips != 1 else ''} of {c.name}, "
        f"{len(s.links)} link{'s' if len(s.links) != 1 else ''}"
    )
    print(
        f"  chip: {c.lanes} lanes, {c.streams_per_direction}+{c.streams_per_direction} streams, "
        f"{c.mem_slices} MEM slices x {c.mem_slice_bytes} bytes = {c.sram_bytes} bytes SRAM, "
        f"{2 * c.mxm_planes_per_hemisphere} MXM planes, {c.clock_mhz:g} MHz"
    )
    if s.chips > 1:
        print(
            f"  links: {s.link_latency_cycles} cycles latency, {s.link_gbps:g} Gb/s, "
            f"{s.link_cycles_per_vector} cycles per {s.vector_wire_bytes}-byte vector, "
            f"receive buffer {s.rx_buffer_depth}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

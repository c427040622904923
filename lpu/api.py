"""The Python API behind the command line: compile, run, check."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.parser import parse
from compiler.reference import Reference
from isa.diagnostics import error
from isa.numerics import FLOATS, to_storage
from isa.program import Program, from_vectors

# --check tolerances: |emulated - reference| <= atol + rtol * |reference|. The two differ only
# in the order f32 sums are taken (matrix passes, reductions) and in f32 intermediates of
# decomposed composites, which move a result by a few units in the last place of its dtype.
TOLERANCE = {"f32": (1e-4, 1e-5), "f16": (4e-3, 1e-3), "bf16": (3e-2, 1e-2)}


def schedule_length(p: Program) -> int:
    """Cycles until the last instruction of any entry has finished, from the program alone."""
    return p.length()


def weights_from_image(p: Program) -> dict[str, np.ndarray]:
    """The params a program carries in its SRAM image (shards of one param are put back together)."""
    from isa.spec import DTYPE_BYTES

    lanes = p.system.chip.lanes
    mem_index = {name: k for k, name in enumerate(p.system.chip.mem_slice_names())}
    where = {
        (int(c), int(s), int(w)): j
        for j, (c, s, w) in enumerate(zip(p.image_chip, p.image_slice, p.image_word))
    }
    pieces: dict[str, list] = {}
    for pl in p.placements:
        if pl.role != "param":
            continue
        rows = []
        for v in range(pl.vectors(lanes)):
            j = where.get((pl.chip, mem_index[pl.slice], pl.word + v * DTYPE_BYTES[pl.dtype]))
            if j is None:
                return {}
            rows.append(p.image_data[j])
        value = to_storage(from_vectors(np.array(rows), pl, lanes), pl.dtype)
        pieces.setdefault(pl.name, []).append((pl, value))
    out = {}
    for name, got in pieces.items():
        whole = [v for pl, v in got if pl.part is None]
        if whole:
            out[name] = whole[0]
            continue
        axis = got[0][0].part[0]
        shape = list(got[0][1].shape)
        shape[axis] = max(pl.part[2] for pl, _ in got)
        value = np.zeros(shape, got[0][1].dtype)
        for pl, v in got:
            index = [slice(None)] * len(shape)
            index[axis] = slice(pl.part[1], pl.part[2])
            value[tuple(index)] = v
        out[name] = value
    return out


@dataclass
class CheckReport:
    ok: bool
    lines: list[str] = field(default_factory=list)


def check_outputs(p: Program, entry: str, inputs, outputs, weights=None) -> CheckReport:
    """Compare emulated outputs with the reference interpreter run on the program's own module."""
    text = p.meta.get("module")
    if not text:
        raise error(
            "this program carries no IR module (it was assembled by hand), so --check has "
            "nothing to compare with"
        )
    module = parse(text, "<program module>")
    if weights is None:
        weights = weights_from_image(p)
    missing = [g.name for g in module.params if g.name not in weights]
    if missing:
        raise error(
            f"--check needs the weights ({', '.join(missing)}): the program was compiled without "
            "them; give them with -w"
        )
    want = Reference(module, weights).run(entry, inputs)
    report = CheckReport(True)
    graph = module.graph(entry)
    for k, (got, ref, t) in enumerate(zip(outputs, want, graph.result_types)):
        if t.dtype in FLOATS:
            rtol, atol = TOLERANCE[t.dtype]
            g64, r64 = got.astype(np.float64), ref.astype(np.float64)
            # inf - inf is computed and then masked out: silence numpy about it
            old = np.seterr(invalid="ignore", over="ignore")
            same_special = (np.isnan(g64) == np.isnan(r64)) & (np.isinf(r64) <= (g64 == r64))
            both = np.isfinite(r64) & np.isfinite(g64)
            close = ~both | (
                np.abs(np.where(both, g64 - r64, 0.0)) <= atol + rtol * np.abs(np.where(both, r64, 0.0))
            )
            # a finite value where the reference has inf or NaN (or the reverse) is caught by same_special
            close &= ~(np.isfinite(r64) & ~np.isfinite(g64))
            bad = ~(same_special & close)
            np.seterr(**old)
            worst = float(np.abs(g64[both] - r64[both]).max(initial=0.0))
            rule = f"within {rtol:g} relative + {atol:g}"
        else:
            bad = got != ref
            worst = float(np.abs(got.astype(np.int64) - ref.astype(np.int64)).max(initial=0))
            rule = "exactly"
        if bad.any():
            report.ok = False
            idx = np.argwhere(bad)[0]
            report.lines.append(
                f"check: out{k} : {t} differs from the reference at {list(map(int, idx))}: emulated "
                f"{got[tuple(idx)]!r}, reference {ref[tuple(idx)]!r} ({int(bad.sum())} of {bad.size} "
                f"elements outside the tolerance: {rule})"
            )
        else:
            report.lines.append(
                f"check: out{k} : {t} matches the reference {rule} (largest difference {worst:.3g})"
            )
    return report

"""Pictures of a schedule (matplotlib, an optional extra: pip install 'lpu[plot]'): a Gantt chart
of the busiest queues over the cycles of one entry, coloured by the op each instruction comes
from, and the utilisation of each unit kind per chip."""

from __future__ import annotations

import numpy as np

from isa.diagnostics import error
from isa.files import write_atomically
from isa.program import Program
from isa.spec import BY_CODE, Unit


def plot(p: Program, r, path: str, max_rows: int = 40) -> None:
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise error("--plot needs matplotlib: pip install 'lpu[plot]'") from None
    e = p.entries.index(r.entry)
    sel = np.nonzero(p.entry == e)[0]
    queues = p.system.chip.queue_table()
    busy = np.array([BY_CODE[int(c)].busy_cycles(int(n)) for c, n in zip(p.opcode[sel], p.n[sel])], np.int64)
    rows: dict[tuple[int, int], float] = {}
    for i, b in zip(sel, busy):
        key = (int(p.chip[i]), int(p.queue[i]))
        rows[key] = rows.get(key, 0) + int(b)
    shown = sorted(sorted(rows, key=lambda k: -rows[k])[:max_rows])
    index = {k: n for n, k in enumerate(shown)}
    op_of = p.meta.get("op_of") or []
    ops = p.meta.get("ops") or []
    names = sorted({ops[op_of[i]].split(" @ ")[0].split(" = ")[-1] for i in sel if i < len(op_of)} or {"?"})
    cmap = plt.get_cmap("tab20")
    colour = {name: cmap(k % 20) for k, name in enumerate(names)}
    fig, (gantt, util) = plt.subplots(
        2, 1, figsize=(12, 3 + 0.22 * len(shown)), gridspec_kw={"height_ratios": [max(3, len(shown) // 3), 2]}
    )
    bars: dict[str, list] = {}
    for i, b in zip(sel, busy):
        key = (int(p.chip[i]), int(p.queue[i]))
        if key not in index:
            continue
        name = ops[op_of[i]].split(" @ ")[0].split(" = ")[-1] if i < len(op_of) else "?"
        bars.setdefault(name, []).append((index[key], int(p.cycle[i]), max(int(b), 1)))
    for name, items in sorted(bars.items()):
        ys = np.array([y for y, _, _ in items])
        starts = np.array([s for _, s, _ in items])
        widths = np.array([w for _, _, w in items])
        gantt.barh(ys, widths, left=starts, height=0.8, color=colour[name], label=name, linewidth=0)
    gantt.set_yticks(range(len(shown)))
    gantt.set_yticklabels([f"chip {c} {queues[q].name}" for c, q in shown], fontsize=7)
    gantt.invert_yaxis()
    gantt.set_xlabel("cycle")
    gantt.set_title(
        f"{r.entry}: {r.cycles} cycles, lower bound {r.lower_bound_cycles} ({r.binding_bound}), "
        f"ratio {r.bound_ratio:.2f}; the {len(shown)} busiest queues"
    )
    gantt.legend(fontsize=6, ncol=min(6, len(bars)), loc="upper right")
    chips = sorted(r.busy_fraction_per_chip)
    kinds = [u.value for u in Unit if any(u.value in r.busy_fraction_per_chip[c] for c in chips)]
    width = 0.8 / max(len(kinds), 1)
    for k, kind in enumerate(kinds):
        util.bar(
            np.arange(len(chips)) + k * width,
            [100 * r.busy_fraction_per_chip[c].get(kind, 0.0) for c in chips],
            width,
            label=kind,
        )
    util.set_xticks(np.arange(len(chips)) + 0.4 - width / 2)
    util.set_xticklabels([str(c) for c in chips], fontsize=7)
    util.set_xlabel("chip")
    util.set_ylabel("% of the kind's queues busy")
    util.legend(fontsize=7)
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=110), ".png")
    plt.close(fig)

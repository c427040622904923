"""A small column table of a program's instructions, for notebooks and scripts (no pandas needed):
numpy columns, filtering by value or by mask, grouping sums, rows as dicts."""

from __future__ import annotations

import numpy as np

from isa.program import Program
from isa.spec import BY_CODE


class Table:
    """Named numpy columns of one length."""

    def __init__(self, columns: dict[str, np.ndarray]):
        lengths = {len(v) for v in columns.values()}
        assert len(lengths) <= 1, "columns of different lengths"
        self.columns = {k: np.asarray(v) for k, v in columns.items()}

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def where(self, mask: np.ndarray | None = None, **equal) -> Table:
        """The rows where `mask` holds and every named column equals its value."""
        keep = np.ones(len(self), bool) if mask is None else np.asarray(mask, bool)
        for k, v in equal.items():
            keep &= self.columns[k] == v
        return Table({k: c[keep] for k, c in self.columns.items()})

    def sum_by(self, key: str, value: str) -> dict:
        """Sum of column `value` for each distinct value of column `key`."""
        out: dict = {}
        for k, v in zip(self.columns[key].tolist(), self.columns[value].tolist()):
            out[k] = out.get(k, 0) + v
        return dict(sorted(out.items()))

    def rows(self) -> list[dict]:
        names = list(self.columns)
        return [dict(zip(names, values)) for values in zip(*(self.columns[k].tolist() for k in names))]

    def __repr__(self) -> str:
        head = self.rows()[:8]
        body = "\n".join("  " + ", ".join(f"{k}={v}" for k, v in r.items()) for r in head)
        more = f"\n  ... {len(self) - 8} more rows" if len(self) > 8 else ""
        return f"Table({len(self)} rows: {', '.join(self.columns)})\n{body}{more}"


def instructions(p: Program) -> Table:
    """One row per instruction: id, entry, cycle, chip, queue, unit, mnemonic, n, busy cycles, and
    the op of the module it comes from (where the program records it)."""
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    queues = p.system.chip.queue_table()
    specs = [BY_CODE[int(c)] for c in p.opcode]
    op_of = p.meta.get("op_of") or []
    ops = p.meta.get("ops") or []
    return Table(
        {
            "id": np.arange(len(p)),
            "entry": np.array([p.entries[int(e)] for e in p.entry], dtype=object),
            "cycle": p.cycle.copy(),
            "chip": p.chip.copy(),
            "queue": np.array([queues[int(q)].name for q in p.queue], dtype=object),
            "unit": np.array([queues[int(q)].unit.value for q in p.queue], dtype=object),
            "mnemonic": np.array([s.mnemonic for s in specs], dtype=object),
            "n": p.n.copy(),
            "busy": np.array([s.busy_cycles(int(n)) for s, n in zip(specs, p.n)], np.int64),
            "op": np.array([ops[k] for k in op_of] if len(op_of) == len(p) else [""] * len(p), dtype=object),
        }
    )

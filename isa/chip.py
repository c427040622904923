"""The parameters of one chip, its named presets, and where its slices stand.

Slices stand side by side on an east-west axis, west to east::

    C2C MXM SXM MEM(k) VXM MEM(k) SXM MXM C2C

and each has an integer position ``x`` (0 at the west edge). A vector on a
stream moves one position per cycle (DESIGN.md 4.1). MEM slices are numbered
from the VXM outwards in each hemisphere, so ``mem.w0`` and ``mem.e0`` are the
VXM's neighbours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from isa.spec import Unit


@dataclass(frozen=True)
class ChipConfig:
    """Every number that describes one chip. Validated on construction."""

    name: str = "custom"
    lanes: int = 320  # elements per vector (one byte per lane per stream)
    superlane_lanes: int = 16  # lanes per superlane; lanes is a multiple of it
    streams_per_direction: int = 32  # eastward streams; as many westward
    mem_slices_per_hemisphere: int = 44
    mem_slice_bytes: int = 2_621_440  # 2.5 MiB per MEM slice
    mxm_planes_per_hemisphere: int = 2  # each plane is a lanes x lanes MAC array
    mxm_k_i8: int = 320  # weight rows per pass for i8
    mxm_k_f16: int = 160  # weight rows per pass for f16 / bf16
    mxm_acc_slots: int = 1024  # accumulator vectors per plane (our choice)
    mxm_queues_per_plane: int = 3
    vxm_alu_queues: int = 16
    sxm_queues_per_hemisphere: int = 14
    c2c_links: int = 16
    clock_mhz: float = 900.0
    power_watts: float = 300.0  # per chip, for energy estimates only

    def __post_init__(self) -> None:
        for problem in _problems(self):
            raise ChipConfigError(*problem)

    # -- derived sizes ---------------------------------------------------------
    @property
    def superlanes(self) -> int:
        return self.lanes // self.superlane_lanes

    @property
    def word_bytes(self) -> int:
        """Bytes in one SRAM word: one vector of one-byte lanes."""
        return self.lanes

    @property
    def words_per_slice(self) -> int:
        return self.mem_slice_bytes // self.word_bytes

    @property
    def mem_slices(self) -> int:
        return 2 * self.mem_slices_per_hemisphere

    @property
    def sram_bytes(self) -> int:
        return self.mem_slices * self.mem_slice_bytes

    def mxm_k(self, dtype: str) -> int:
        """Weight rows one matrix pass takes for an input element type."""
        if dtype == "i8":
            return self.mxm_k_i8
        if dtype in ("f16", "bf16"):
            return self.mxm_k_f16
        raise ValueError(f"the matrix unit does not take {dtype} inputs")

    def replace(self, **changes) -> ChipConfig:
        return dataclasses.replace(self, **changes)

    # -- layout ----------------------------------------------------------------
    def slices(self) -> tuple[Slice, ...]:
        """Every slice of the chip, west to east, with its position."""
        k = self.mem_slices_per_hemisphere
        names: list[tuple[Unit, str]] = [(Unit.C2C, "c2c.w"), (Unit.MXM, "mxm.w"), (Unit.SXM, "sxm.w")]
        names += [(Unit.MEM, f"mem.w{i}") for i in reversed(range(k))]
        names += [(Unit.VXM, "vxm")]
        names += [(Unit.MEM, f"mem.e{i}") for i in range(k)]
        names += [(Unit.SXM, "sxm.e"), (Unit.MXM, "mxm.e"), (Unit.C2C, "c2c.e")]
        return tuple(Slice(unit, name, x) for x, (unit, name) in enumerate(names))

    def position(self, slice_name: str) -> int:
        for s in self.slices():
            if s.name == slice_name:
                return s.x
        raise KeyError(slice_name)

    def queues(self, s: Slice) -> int:
        """How many instruction queues a slice has."""
        return {
            Unit.MEM: 1,
            Unit.VXM: self.vxm_alu_queues,
            Unit.MXM: self.mxm_planes_per_hemisphere * self.mxm_queues_per_plane,
            Unit.SXM: self.sxm_queues_per_hemisphere,
            Unit.C2C: self.c2c_links // 2,
        }[s.unit]

    def total_queues(self) -> int:
        return sum(self.queues(s) for s in self.slices())

    def queue_table(self) -> tuple[Queue, ...]:
        """Every instruction queue of the chip, west to east; a queue's index is its position here.

        MEM slices have one queue named like the slice (`mem.e0`); other slices number
        theirs (`vxm.q3`, `mxm.w.q4`). An MXM queue drives plane `q // mxm_queues_per_plane`.
        """
        out = []
        for s in self.slices():
            count = self.queues(s)
            for k in range(count):
                name = s.name if s.unit is Unit.MEM else f"{s.name}.q{k}"
                plane = k // self.mxm_queues_per_plane if s.unit is Unit.MXM else 0
                out.append(Queue(len(out), name, s.unit, s.name, s.x, plane))
        return tuple(out)

    def mem_slice_index(self, slice_name: str) -> int:
        """MEM slices numbered 0.. west to east (the index SRAM addresses use)."""
        names = [s.name for s in self.slices() if s.unit is Unit.MEM]
        return names.index(slice_name)

    def mem_slice_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slices() if s.unit is Unit.MEM)


@dataclass(frozen=True)
class Slice:
    unit: Unit
    name: str
    x: int


@dataclass(frozen=True)
class Queue:
    index: int
    name: str
    unit: Unit
    slice: str
    x: int
    plane: int  # MXM plane this queue drives (0 elsewhere)


class ChipConfigError(ValueError):
    """A chip parameter is impossible; carries the parameter's name."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")
        self.message = message


def _problems(c: ChipConfig):
    ints = [f.name for f in dataclasses.fields(c) if f.type in ("int", int)]
    for name in ints:
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool):
            yield name, f"must be an integer, got {v!r}"
            return
        if v < 1:
            yield name, f"must be at least 1, got {v}"
            return
    for name in ("clock_mhz", "power_watts"):
        v = getattr(c, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            yield name, f"must be a positive number, got {v!r}"
            return
    if not isinstance(c.name, str) or not c.name:
        yield "name", "must be a non-empty string"
    if c.lanes % c.superlane_lanes:
        yield "lanes", f"{c.lanes} is not a multiple of superlane_lanes ({c.superlane_lanes})"
    if c.superlane_lanes != 16:
        yield "superlane_lanes", f"the SXM transposes 16x16 blocks, so it must be 16, got {c.superlane_lanes}"
    if c.mem_slice_bytes % c.lanes:
        yield "mem_slice_bytes", f"{c.mem_slice_bytes} is not a whole number of {c.lanes}-byte words"
    if c.mxm_k_i8 > c.lanes:
        yield "mxm_k_i8", f"{c.mxm_k_i8} rows exceed the {c.lanes}-row matrix array"
    if c.mxm_k_f16 > c.mxm_k_i8:
        yield "mxm_k_f16", f"f16 takes two bytes a row, so it cannot exceed mxm_k_i8 ({c.mxm_k_i8})"
    if c.lanes % c.mxm_k_i8 or c.lanes % c.mxm_k_f16:
        yield "mxm_k_f16", (f"a matrix pass takes a lane window of a vector, so lanes ({c.lanes}) must be a "
                            f"multiple of mxm_k_i8 ({c.mxm_k_i8}) and mxm_k_f16 ({c.mxm_k_f16})")
    if c.c2c_links % 2:
        yield "c2c_links", f"links are split between the two edges, so it must be even, got {c.c2c_links}"


# The published Groq TSP (ISCA 2020; shared/reference/groq-tsp.md section 1.3).
TSP = ChipConfig(name="tsp")

# A small chip for tests and fuzzing: one superlane, few streams and slices.
TINY = ChipConfig(
    name="tiny",
    lanes=16,
    streams_per_direction=8,
    mem_slices_per_hemisphere=4,
    mem_slice_bytes=65_536,
    mxm_planes_per_hemisphere=1,
    mxm_k_i8=16,
    mxm_k_f16=8,
    mxm_acc_slots=64,
    mxm_queues_per_plane=3,
    vxm_alu_queues=4,
    sxm_queues_per_hemisphere=2,
    c2c_links=4,
)

CHIP_PRESETS: dict[str, ChipConfig] = {"tsp": TSP, "tiny": TINY}

CHIP_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ChipConfig))

"""Systems of chips joined by links: named presets and the TOML schema of DESIGN.md 4.2.

A system file looks like::

    [chip]                 # a chip preset, optionally with parameters overridden
    preset = "tsp"
    [system]
    chips = 4
    links = [[0, 1], [1, 2], [2, 3], [3, 0]]   # each link carries both directions
    link_latency_cycles = 220
    link_gbps = 100

Every key is checked: an unknown key or an impossible value is an error that
names the key and points at its line in the file.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass

from isa.chip import CHIP_KEYS, CHIP_PRESETS, ChipConfig, ChipConfigError
from isa.diagnostics import Loc, LpuError, Source, error
from isa.files import read_bytes

WIRE_OVERHEAD_BYTES = 8  # a 320-byte vector travels as 328 bytes (ISCA 2022)


ESTIMATE_KEYS = ("gpu_memory_gbps", "gpu_tflops")  # for lpu report's GPU comparison


@dataclass(frozen=True)
class SystemConfig:
    """Chips of one kind, the links between them, and the links' timing."""

    name: str
    chip: ChipConfig
    chips: int = 1
    links: tuple[tuple[int, int], ...] = ()
    link_latency_cycles: int = 220
    link_gbps: float = 100.0
    rx_buffer_depth: int = 1  # vectors a receiver may hold before its RECV takes them
    # for `lpu report`'s comparison only (not for timing): a GPU (defaults: an H100-class part);
    # a chip's power is the chip's own `power_watts`
    gpu_memory_gbps: float = 3350.0  # GB/s of memory bandwidth
    gpu_tflops: float = 989.0  # dense f16/bf16 peak

    def __post_init__(self) -> None:
        for key, message in _problems(self):
            raise ChipConfigError(key, message)

    @property
    def vector_wire_bytes(self) -> int:
        return self.chip.lanes + WIRE_OVERHEAD_BYTES

    @property
    def link_cycles_per_vector(self) -> int:
        """Cycles one vector occupies a link direction (serialisation)."""
        seconds = self.vector_wire_bytes * 8 / (self.link_gbps * 1e9)
        return max(1, math.ceil(seconds * self.chip.clock_mhz * 1e6 - 1e-9))

    def chip_links(self, chip: int) -> tuple[tuple[int, int], ...]:
        """The links of one chip in its own numbering: link k of the chip is the k-th system link
        that touches it (in the order of `links`); each entry is (system link index, other chip)."""
        return tuple((k, b if a == chip else a) for k, (a, b) in enumerate(self.links) if chip in (a, b))

    def links_of_chips(self) -> list[list[tuple[int, int]]]:
        """`chip_links` of every chip at once (one pass over the links)."""
        out: list[list[tuple[int, int]]] = [[] for _ in range(self.chips)]
        for k, (a, b) in enumerate(self.links):
            out[a].append((k, b))
            if b != a:
                out[b].append((k, a))
        return out

    def neighbours(self, chip: int) -> tuple[int, ...]:
        out = {b for a, b in self.links if a == chip} | {a for a, b in self.links if b == chip}
        return tuple(sorted(out))


MAX_CHIPS = 1 << 20  # a million chips: far beyond any deployment, small enough to tabulate


def _problems(s: SystemConfig):
    if not isinstance(s.chips, int) or isinstance(s.chips, bool) or s.chips < 1:
        yield "system.chips", f"must be a positive integer, got {s.chips!r}"
        return
    if s.chips > MAX_CHIPS:  # per-chip tables are built from it: a typo must not allocate the machine
        yield "system.chips", f"must be at most {MAX_CHIPS}, got {s.chips}"
        return
    if not isinstance(s.link_latency_cycles, int) or s.link_latency_cycles < 1:
        yield "system.link_latency_cycles", f"must be a positive integer, got {s.link_latency_cycles!r}"
    if isinstance(s.link_gbps, bool) or not isinstance(s.link_gbps, (int, float)) or not s.link_gbps > 0:
        yield "system.link_gbps", f"must be a positive number, got {s.link_gbps!r}"
    for key in ESTIMATE_KEYS:
        v = getattr(s, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            yield f"system.{key}", f"must be a positive number, got {v!r}"
    if not isinstance(s.rx_buffer_depth, int) or s.rx_buffer_depth < 1:
        yield "system.rx_buffer_depth", f"must be a positive integer, got {s.rx_buffer_depth!r}"
    degree = [0] * s.chips
    for link in s.links:
        a, b = link
        for end in (a, b):
            if not 0 <= end < s.chips:
                yield "system.links", f"link {list(link)} names chip {end}, but chips are 0..{s.chips - 1}"
                return
        if a == b:
            yield "system.links", f"link {list(link)} joins chip {a} to itself"
            return
        # a pair listed twice is two parallel links (two cables: twice the bandwidth)
        degree[a] += 1
        degree[b] += 1
    for chip, d in enumerate(degree):
        if d > s.chip.c2c_links:
            yield "system.links", f"chip {chip} has {d} links but a {s.chip.name} chip has {s.chip.c2c_links}"
            return
    if s.chips > 1:
        unreached = _unreached(s.chips, s.links)
        if unreached:
            yield "system.links", f"chips {sorted(unreached)} cannot be reached from chip 0"


def _unreached(chips: int, links) -> set[int]:
    adjacent: dict[int, set[int]] = {c: set() for c in range(chips)}
    for a, b in links:
        adjacent[a].add(b)
        adjacent[b].add(a)
    seen, todo = {0}, [0]
    while todo:
        for n in adjacent[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return set(range(chips)) - seen


def _all_to_all(chips: int) -> tuple[tuple[int, int], ...]:
    return tuple((a, b) for a in range(chips) for b in range(a + 1, chips))


def _ring(chips: int) -> tuple[tuple[int, int], ...]:
    if chips == 1:
        return ()
    if chips == 2:
        return ((0, 1),)
    return tuple((i, (i + 1) % chips) for i in range(chips))


SYSTEM_NAMES = ("tiny", "tsp", "node", "rack", "dragonfly:R", "ring:N")

NODE_CHIPS = 8  # a GroqNode: 8 chips, all to all (ISCA 2022)
RACK_NODES = 9  # a GroqRack: 9 nodes = 72 chips
RACK_PORTS = 2  # per chip, links to other nodes of its rack (9 nodes doubly connected: 144 ports)
GLOBAL_PORTS = 2  # per chip, links to other racks (the other 144 ports of a rack)


def _rack_links(base: int) -> tuple[list, list, list]:
    """A rack whose chips are numbered from `base`: each node all to all, and every pair of nodes
    joined by two links. Node x and node y = x + d (mod 9, 1 <= d <= 4) are joined by copy c from
    chip (d - 1 + 4c) mod 8 of x to chip (4c - d) mod 8 of y, so every chip serves exactly two other
    nodes, and node x reaches node x + 1 from its chip 0 to that node's chip 7.

    Returns (node links, pipeline links, other rack links): the pipeline links (x -> x + 1, both
    copies, for x < 8: node 8 hands over to the next rack) are listed right after the node links,
    so that on both ends they are the chip's first link out of its node (link 7, west edge), in
    every node: the hand-overs of a pipeline laid out node after node are alike."""
    node_links, pipeline, other = [], [], []
    for n in range(RACK_NODES):
        first = base + n * NODE_CHIPS
        node_links += [(first + a, first + b) for a, b in _all_to_all(NODE_CHIPS)]
    for x in range(RACK_NODES):
        for d in range(1, RACK_NODES // 2 + 1):
            y = (x + d) % RACK_NODES
            for c in range(RACK_PORTS):
                chip_x = base + x * NODE_CHIPS + (d - 1 + 4 * c) % NODE_CHIPS
                chip_y = base + y * NODE_CHIPS + (4 * c - d) % NODE_CHIPS
                hands_over = d == 1 and y != 0
                (pipeline if hands_over else other).append((chip_x, chip_y))
    return node_links, pipeline, other


def _dragonfly_links(racks: int) -> list[tuple[int, int]]:
    """Racks in a ring of dedicated global links, two from each rack's last node to the next rack's
    first node, wired like the two links between consecutive nodes of a rack (chip 0 to chip 7,
    chip 4 to chip 3) and listed with them, so that a pipeline laid out node after node, rack after
    rack, hands over alike everywhere and never through a third node. The racks are also joined all
    to all through their other global ports: rack r's ports, numbered k = 2 j + q for chip j and
    port q (without the four the ring uses), go round-robin to the other racks; ports left when the
    rounds do not divide evenly stay unused."""
    per_rack = RACK_NODES * NODE_CHIPS
    parts = [_rack_links(r * per_rack) for r in range(racks)]
    node_links = [link for p in parts for link in p[0]]
    pipeline = [link for p in parts for link in p[1]]
    other = [link for p in parts for link in p[2]]
    others = racks - 1
    if others == 0:
        return node_links + pipeline + other
    last = (RACK_NODES - 1) * NODE_CHIPS  # the last node's first chip
    ring, ring_ports = [], set()
    for c in range(RACK_PORTS):  # copy c leaves the last node's chip 4c, arrives at the first's 7 - 4c
        out_chip, in_chip = last + 4 * c, NODE_CHIPS - 1 - 4 * c
        ring_ports |= {out_chip * GLOBAL_PORTS, in_chip * GLOBAL_PORTS}
        ring += [(r * per_rack + out_chip, (r + 1) % racks * per_rack + in_chip) for r in range(racks)]
    ports = [k for k in range(per_rack * GLOBAL_PORTS) if k not in ring_ports]
    rounds = len(ports) // others
    rest = []
    for r in range(racks):
        for s in range(r + 1, racks):
            ps, pr = s - 1, r  # each rack's place in the other's list
            for k in range(rounds):
                port_r, port_s = ports[k * others + ps], ports[k * others + pr]
                rest.append((r * per_rack + port_r // GLOBAL_PORTS, s * per_rack + port_s // GLOBAL_PORTS))
    return node_links + pipeline + ring + other + rest


def named_system(name: str) -> SystemConfig:
    """A named system: tiny and tsp (one chip), node (8 tsp chips, all to all), rack (9 nodes),
    dragonfly:R (R racks), ring:N."""
    if name in CHIP_PRESETS:
        return SystemConfig(name=name, chip=CHIP_PRESETS[name])
    if name == "node":
        return SystemConfig(
            name="node", chip=CHIP_PRESETS["tsp"], chips=NODE_CHIPS, links=_all_to_all(NODE_CHIPS)
        )
    if name == "rack":
        return SystemConfig(
            name="rack",
            chip=CHIP_PRESETS["tsp"],
            chips=RACK_NODES * NODE_CHIPS,
            links=tuple(_dragonfly_links(1)),
        )
    m = re.fullmatch(r"dragonfly:(\d+)", name)
    if m:
        racks = int(m.group(1))
        if not 1 <= racks <= 145:
            raise error(f"dragonfly:R needs 1 <= R <= 145 racks (the largest published system), got {racks}")
        return SystemConfig(
            name=name,
            chip=CHIP_PRESETS["tsp"],
            chips=racks * RACK_NODES * NODE_CHIPS,
            links=tuple(_dragonfly_links(racks)),
        )
    m = re.fullmatch(r"ring:(\d+)", name)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= 4096:
            raise error(f"ring:N needs 1 <= N <= 4096, got {n}")
        return SystemConfig(name=name, chip=CHIP_PRESETS["tsp"], chips=n, links=_ring(n))
    raise error(f"unknown system {name!r}; known systems: {', '.join(SYSTEM_NAMES)}, or a .toml file")


# -- TOML ----------------------------------------------------------------------

SYSTEM_KEYS = (
    "name",
    "chips",
    "links",
    "link_latency_cycles",
    "link_gbps",
    "rx_buffer_depth",
    "gpu_memory_gbps",
    "gpu_tflops",
)


def load_system(path: str) -> SystemConfig:
    """Read a system (or a lone chip) from a TOML file; errors name the file, line and key."""
    return parse_system(read_bytes(path, "system file"), path)


def parse_system(raw: bytes, filename: str) -> SystemConfig:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"file is not UTF-8 text (byte {e.start})", filename=filename) from None
    source = Source(filename, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        loc = Loc(source, int(m.group(1)), int(m.group(2))) if m else None
        raise error(f"invalid TOML: {msg[:1].lower() + msg[1:]}", loc, filename=filename) from None

    def fail(table: str | None, key: str | None, message: str) -> LpuError:
        return error(message, _locate(source, table, key), filename=filename)

    for table in doc:
        if table not in ("chip", "system"):
            raise fail(None, table, f"unknown table [{table}]; a system file has [chip] and [system]")
        if not isinstance(doc[table], dict):
            raise fail(None, table, f"{table!r} must be a table ([{table}])")
    chip_table = dict(doc.get("chip", {}))
    system_table = dict(doc.get("system", {}))

    preset = chip_table.pop("preset", "tsp")
    if preset not in CHIP_PRESETS:
        raise fail("chip", "preset", f"unknown chip preset {preset!r}; known: {', '.join(CHIP_PRESETS)}")
    for key in chip_table:
        if key not in CHIP_KEYS:
            raise fail("chip", key, f"unknown key 'chip.{key}'; known keys: preset, {', '.join(CHIP_KEYS)}")
    try:
        chip = CHIP_PRESETS[preset].replace(**chip_table)
    except ChipConfigError as e:
        raise fail("chip", e.key, f"chip.{e.key} {e.message}") from None

    for key in system_table:
        if key not in SYSTEM_KEYS:
            raise fail("system", key, f"unknown key 'system.{key}'; known keys: {', '.join(SYSTEM_KEYS)}")
    links = system_table.get("links", None)
    chips = system_table.get("chips", 1)
    if links is None:
        links = _all_to_all(chips) if isinstance(chips, int) and 1 < chips <= 64 else ()
    if not isinstance(links, list) and not isinstance(links, tuple):
        raise fail("system", "links", "system.links must be a list of [a, b] pairs")
    pairs = []
    for link in links:
        if not (
            isinstance(link, (list, tuple))
            and len(link) == 2
            and all(isinstance(e, int) and not isinstance(e, bool) for e in link)
        ):
            raise fail("system", "links", f"system.links entry {link!r} is not a pair of chip numbers")
        pairs.append((link[0], link[1]))
    name = system_table.get("name", filename.rsplit("/", 1)[-1].removesuffix(".toml"))
    try:
        return SystemConfig(
            name=str(name),
            chip=chip,
            chips=chips,
            links=tuple(pairs),
            link_latency_cycles=system_table.get("link_latency_cycles", 220),
            link_gbps=system_table.get("link_gbps", 100.0),
            rx_buffer_depth=system_table.get("rx_buffer_depth", 1),
            **{k: system_table[k] for k in ESTIMATE_KEYS if k in system_table},
        )
    except ChipConfigError as e:
        table, _, key = e.key.partition(".")
        raise fail(table, key, f"{e.key} {e.message}") from None


def _locate(source: Source, table: str | None, key: str | None) -> Loc | None:
    """Find the line where `key` is set inside `[table]` (or the header of table `key`)."""
    current = None
    for number, line in enumerate(source.text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"\[\s*([A-Za-z0-9_.-]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            if table is None and current == key:
                return Loc(source, number, line.index("[") + 1)
            continue
        m = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
        if m and m.group(1) == key and current == table:
            return Loc(source, number, m.start(1) + 1)
    return None


def resolve_system(spec: str) -> SystemConfig:
    """A system from a name (`tiny`, `node`, `ring:4`, ...) or a path to a TOML file."""
    if spec.endswith(".toml"):
        return load_system(spec)
    return named_system(spec)

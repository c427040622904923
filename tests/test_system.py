"""Systems: named presets and TOML files, with errors that name the key and its line."""

from __future__ import annotations

import pytest

from isa.diagnostics import LpuError
from isa.system import named_system, parse_system


def load(text: str):
    return parse_system(text.encode(), "sys.toml")


def message(text: str) -> str:
    with pytest.raises(LpuError) as e:
        load(text)
    return e.value.render()


def test_unknown_dragonfly_sizes_are_refused():
    with pytest.raises(LpuError, match="dragonfly:R needs 1 <= R <= 145"):
        named_system("dragonfly:0")


def test_named_systems():
    assert named_system("tiny").chips == 1 and named_system("tiny").chip.lanes == 16
    node = named_system("node")
    assert node.chips == 8 and len(node.links) == 28
    assert node.neighbours(3) == (0, 1, 2, 4, 5, 6, 7)
    ring = named_system("ring:5")
    assert ring.neighbours(0) == (1, 4)
    with pytest.raises(LpuError, match="unknown system 'galaxy'"):
        named_system("galaxy")


def test_link_timing_follows_design_numbers():
    node = named_system("node")
    assert node.vector_wire_bytes == 328
    assert node.link_cycles_per_vector == 24  # 328 B at 100 Gb/s and 900 MHz: 23.6 cycles
    assert node.link_latency_cycles == 220


def test_toml_design_example_loads():
    s = load("""
[chip]                 # a chip preset, optionally with parameters overridden
preset = "tsp"
[system]
chips = 4
links = [[0, 1], [1, 2], [2, 3], [3, 0]]   # each link carries both directions
link_latency_cycles = 220
link_gbps = 100
""")
    assert s.chips == 4 and s.links == ((0, 1), (1, 2), (2, 3), (3, 0))
    assert s.chip.lanes == 320


def test_chip_override():
    s = load('[chip]\npreset = "tiny"\nlanes = 32\nmem_slice_bytes = 65536\n')
    assert s.chip.lanes == 32 and s.chip.streams_per_direction == 8


def test_unknown_chip_key_points_at_its_line():
    text = '[chip]\npreset = "tiny"\nlanez = 32\n'
    assert message(text) == (
        "sys.toml:3:1: error: unknown key 'chip.lanez'; known keys: preset, name, lanes, "
        "superlane_lanes, streams_per_direction, mem_slices_per_hemisphere, mem_slice_bytes, "
        "mxm_planes_per_hemisphere, mxm_k_i8, mxm_k_f16, mxm_acc_slots, mxm_queues_per_plane, "
        "vxm_alu_queues, sxm_queues_per_hemisphere, c2c_links, clock_mhz, power_watts\n"
        "  lanez = 32\n"
        "  ^"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[chip]\nlanes = 100\n", "sys.toml:2:1: error: chip.lanes 100 is not a multiple of superlane_lanes"),
        ("[chip]\nlanes = -16\n", "sys.toml:2:1: error: chip.lanes must be at least 1, got -16"),
        ('[chip]\nlanes = "wide"\n', "sys.toml:2:1: error: chip.lanes must be an integer, got 'wide'"),
        ('[chip]\npreset = "huge"\n', "sys.toml:2:1: error: unknown chip preset 'huge'"),
        (
            "[system]\nchips = 3\nlinks = [[0, 1], [1, 5]]\n",
            "sys.toml:3:1: error: system.links link [1, 5] names chip 5",
        ),
        (
            "[system]\nchips = 3\nlinks = [[0, 1]]\n",
            "sys.toml:3:1: error: system.links chips [2] cannot be reached",
        ),
        ("[system]\nchips = 2\nlinks = [[0, 0]]\n", "joins chip 0 to itself"),
        (
            "[system]\nchips = 2\nlink_gbps = 0\n",
            "sys.toml:3:1: error: system.link_gbps must be a positive number, got 0",
        ),
        ("[system]\nchips = 0\n", "sys.toml:2:1: error: system.chips must be a positive integer"),
        (
            "[system]\nchips = 9999999999999999999999999999994\n",  # found by the hardening property
            "sys.toml:2:1: error: system.chips must be at most 1048576",
        ),
        ("[system]\nchips = 2\nspeed = 3\n", "sys.toml:3:1: error: unknown key 'system.speed'"),
        ('[system]\nlinks = [[0, "a"]]\n', "is not a pair of chip numbers"),
        ("[network]\nx = 1\n", "sys.toml:1:1: error: unknown table [network]"),
        ("[chip\nlanes = 3\n", "sys.toml:1:6: error: invalid TOML"),
        (
            '[chip]\npreset = "tiny"\n[system]\nchips = 8\nlinks = [[0,1],[0,2],[0,3],[0,4],[0,5],[1,2],[2,3],[3,4],[4,5],[5,6],[6,7]]\n',
            "chip 0 has 5 links but a tiny chip has 4",
        ),
    ],
)
def test_bad_system_files(text, expected):
    assert message(text).startswith(expected) or expected in message(text)


def test_non_utf8_system_file():
    with pytest.raises(LpuError, match="not UTF-8"):
        parse_system(b'[chip]\nname = "\xff"\n', "sys.toml")


def test_parallel_links_are_allowed_and_numbered_per_chip():
    s = load("[system]\nchips = 2\nlinks = [[0, 1], [1, 0]]\n")
    assert s.chip_links(0) == ((0, 1), (1, 1)) and s.chip_links(1) == ((0, 0), (1, 0))


@pytest.mark.parametrize(
    "name, chips, links, degree, diameter",
    [
        ("node", 8, 28, (7, 7), 1),
        ("rack", 72, 324, (9, 9), 3),  # 7 in the node + 2 to other nodes of the rack
        ("dragonfly:2", 144, 792, (11, 11), 4),  # + 2 global ports per chip
        # a rack's 144 global ports: 4 for the ring of racks, 140 round-robin (20 per rack pair);
        # at most 5 hops, as published
        ("dragonfly:8", 576, 3168, (11, 11), 5),
    ],
)
def test_named_systems_have_the_published_shape(name, chips, links, degree, diameter):
    import networkx as nx

    s = named_system(name)
    assert (s.chips, len(s.links)) == (chips, links)
    g = nx.MultiGraph()
    g.add_nodes_from(range(s.chips))
    g.add_edges_from(s.links)
    degrees = [d for _, d in g.degree()]
    assert (min(degrees), max(degrees)) == degree and max(degrees) <= s.chip.c2c_links
    assert nx.is_connected(g)
    assert nx.diameter(nx.Graph(g)) == diameter


@pytest.mark.parametrize("name", ["rack", "dragonfly:2", "dragonfly:8"])
def test_consecutive_nodes_are_joined_alike_everywhere(name):
    """Node n hands over to node n + 1 (the next rack's first node after a rack's last) from its
    chips 0 and 4 to that node's chips 7 and 3, and on both ends that link is the chip's first link
    out of its node: link 7, on the west edge. So the hand-overs of a pipeline laid out node after
    node are alike, which is what lets a timing-only compile reuse one stage's schedule."""
    s = named_system(name)
    west = s.chip.c2c_links // 2
    for n in range(s.chips // 8 - 1):
        for out, into in ((0, 7), (4, 3)):
            a, b = 8 * n + out, 8 * (n + 1) + into
            link_a, other_a = s.chip_links(a)[7]
            link_b, other_b = s.chip_links(b)[7]
            assert (other_a, other_b, link_a) == (b, a, link_b), (n, out)
            assert 7 < west

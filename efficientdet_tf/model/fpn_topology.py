"""Feature-network topologies as data: which features each fused node reads.

Feature ids count the cell's inputs first (levels min..max get ids 0..n-1), then each node in
order. For BiFPN on P3-P7 (the official numbering):

    P7 (4)              P7" (12)
    P6 (3)    P6' (5)   P6" (11)
    P5 (2)    P5' (6)   P5" (10)
    P4 (1)    P4' (7)   P4" (9)
    P3 (0)              P3" (8)

A cell's output at each level is the newest feature of that level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass(frozen=True)
class FpnNode:
    level: int
    input_ids: tuple[int, ...]


@dataclass(frozen=True)
class FpnTopology:
    min_level: int
    max_level: int
    nodes: tuple[FpnNode, ...]

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1

    def level_of(self, feature_id: int) -> int:
        if feature_id < self.num_levels:
            return self.min_level + feature_id
        return self.nodes[feature_id - self.num_levels].level

    def output_ids(self) -> list[int]:
        """The id of the newest feature at each level, min_level first."""
        newest = {level: level - self.min_level for level in self.levels()}
        for index, node in enumerate(self.nodes):
            newest[node.level] = self.num_levels + index
        return [newest[level] for level in self.levels()]

    def levels(self) -> range:
        return range(self.min_level, self.max_level + 1)


class _Builder:
    """Appends nodes while tracking the ids of every feature at each level."""

    def __init__(self, min_level: int, max_level: int):
        self.min_level, self.max_level = min_level, max_level
        self.ids = {level: [level - min_level] for level in range(min_level, max_level + 1)}
        self.nodes: list[FpnNode] = []

    def input(self, level: int) -> int:
        return self.ids[level][0]

    def last(self, level: int) -> int:
        return self.ids[level][-1]

    def all(self, level: int) -> list[int]:
        return list(self.ids[level])

    def add(self, level: int, input_ids: list[int]) -> None:
        self.nodes.append(FpnNode(level, tuple(input_ids)))
        self.ids[level].append(len(self.ids) + len(self.nodes) - 1)

    def levels(self) -> range:
        return range(self.min_level, self.max_level + 1)

    def topology(self) -> FpnTopology:
        return FpnTopology(self.min_level, self.max_level, tuple(self.nodes))


def bifpn(min_level: int, max_level: int) -> FpnTopology:
    """EfficientDet's BiFPN: top-down, then bottom-up with a skip from the same-level input."""
    b = _Builder(min_level, max_level)
    _bifpn_paths(b)
    return b.topology()


def _bifpn_paths(b: _Builder) -> None:
    for level in range(b.max_level - 1, b.min_level - 1, -1):
        b.add(level, [b.last(level), b.last(level + 1)])
    for level in range(b.min_level + 1, b.max_level + 1):
        b.add(level, b.all(level) + [b.last(level - 1)])


def qufpn(min_level: int, max_level: int) -> FpnTopology:
    """The official QuFPN (google/automl pull request 580): four paths, then a sum per level.

    BiFPN (top-down then bottom-up) and its mirror image (bottom-up then top-down, each node
    also reading the same-level input) both start from the cell's inputs; a last node per level,
    top level first, fuses the two results.
    """
    b = _Builder(min_level, max_level)
    _bifpn_paths(b)
    bifpn_outputs = {level: b.last(level) for level in b.levels()}
    for level in range(min_level + 1, max_level + 1):
        below = b.input(level - 1) if level == min_level + 1 else b.last(level - 1)
        b.add(level, [b.input(level), below])
    bottom_up = {level: b.last(level) for level in range(min_level + 1, max_level + 1)}
    for level in range(max_level - 1, min_level, -1):
        b.add(level, [b.input(level), bottom_up[level], b.last(level + 1)])
    b.add(min_level, [b.input(min_level), b.last(min_level + 1)])
    for level in range(max_level, min_level - 1, -1):
        b.add(level, [bifpn_outputs[level], b.last(level)])
    return b.topology()


def fpn(min_level: int, max_level: int) -> FpnTopology:
    """The top-down FPN (Lin et al., 2017), the paper's first ablation baseline."""
    b = _Builder(min_level, max_level)
    _top_down(b)
    return b.topology()


def panet(min_level: int, max_level: int) -> FpnTopology:
    """PANet (Liu et al., 2018): FPN's top-down path followed by a bottom-up path."""
    b = _Builder(min_level, max_level)
    _top_down(b)
    for level in range(min_level + 1, max_level + 1):
        b.add(level, [b.last(level), b.last(level - 1)])
    return b.topology()


def _top_down(b: _Builder) -> None:
    b.add(b.max_level, [b.last(b.max_level)])
    for level in range(b.max_level - 1, b.min_level - 1, -1):
        b.add(level, [b.last(level), b.last(level + 1)])


TOPOLOGIES: dict[str, Callable[[int, int], FpnTopology]] = {
    "bifpn": bifpn,
    "bifpn_dyn": bifpn,  # the official legacy name of bifpn
    "qufpn": qufpn,
    "fpn": fpn,
    "panet": panet,
}


def from_fpn_config(fpn_config: Mapping, min_level: int, max_level: int) -> FpnTopology:
    """The topology of the official hparam `fpn_config` (nodes of `feat_level` and
    `inputs_offsets`, the ids above; the config checks them)."""
    nodes = tuple(FpnNode(node["feat_level"], tuple(node["inputs_offsets"]))
                  for node in fpn_config["nodes"])
    return FpnTopology(min_level, max_level, nodes)


def get_topology(fpn_name: str, min_level: int, max_level: int) -> FpnTopology:
    try:
        return TOPOLOGIES[fpn_name](min_level, max_level)
    except KeyError:
        raise ValueError(
            f"Unknown fpn_name {fpn_name!r}; known: {', '.join(TOPOLOGIES)}.") from None

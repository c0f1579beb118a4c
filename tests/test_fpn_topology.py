"""Feature-network topologies as data."""

import pytest

from efficientdet_tf.model.fpn_topology import bifpn, fpn, get_topology, panet


def test_bifpn_p3_p7_is_the_official_graph():
    nodes = [(n.level, list(n.input_ids)) for n in bifpn(3, 7).nodes]
    assert nodes == [
        (6, [3, 4]), (5, [2, 5]), (4, [1, 6]), (3, [0, 7]),
        (4, [1, 7, 8]), (5, [2, 6, 9]), (6, [3, 5, 10]), (7, [4, 11]),
    ]
    assert bifpn(3, 7).output_ids() == [8, 9, 10, 11, 12]


@pytest.mark.parametrize("build", [bifpn, fpn, panet])
@pytest.mark.parametrize("levels", [(3, 7), (2, 6), (3, 8), (4, 5)])
def test_every_node_reads_existing_features_and_every_level_has_an_output(build, levels):
    topology = build(*levels)
    for index, node in enumerate(topology.nodes):
        assert all(i < topology.num_levels + index for i in node.input_ids)
        assert topology.min_level <= node.level <= topology.max_level
    outputs = topology.output_ids()
    assert [topology.level_of(i) for i in outputs] == list(topology.levels())


def test_fpn_is_top_down_only_and_panet_adds_bottom_up():
    top_down = [n.level for n in fpn(3, 7).nodes]
    assert top_down == [7, 6, 5, 4, 3]
    assert [n.level for n in panet(3, 7).nodes] == top_down + [4, 5, 6, 7]
    # PANet's bottom-up P4 reads its top-down P4 and the top-down P3 output.
    assert panet(3, 7).nodes[5].input_ids == (8, 9)


def test_unknown_topology_is_named():
    with pytest.raises(ValueError, match="Unknown fpn_name 'qufpn'"):
        get_topology("qufpn", 3, 7)

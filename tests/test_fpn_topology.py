"""Feature-network topologies as data."""

import pytest

from efficientdet_tf.model.fpn_topology import bifpn, fpn, get_topology, panet, qufpn


def test_bifpn_p3_p7_is_the_official_graph():
    nodes = [(n.level, list(n.input_ids)) for n in bifpn(3, 7).nodes]
    assert nodes == [
        (6, [3, 4]), (5, [2, 5]), (4, [1, 6]), (3, [0, 7]),
        (4, [1, 7, 8]), (5, [2, 6, 9]), (6, [3, 5, 10]), (7, [4, 11]),
    ]
    assert bifpn(3, 7).output_ids() == [8, 9, 10, 11, 12]


def test_bifpn_p2_p7_is_the_official_graph():
    """official tf2/fpn_configs_test.py::test_bifpn_l2l7."""
    nodes = [(n.level, list(n.input_ids)) for n in bifpn(2, 7).nodes]
    assert nodes == [
        (6, [4, 5]), (5, [3, 6]), (4, [2, 7]), (3, [1, 8]), (2, [0, 9]),
        (3, [1, 9, 10]), (4, [2, 8, 11]), (5, [3, 7, 12]), (6, [4, 6, 13]), (7, [5, 14]),
    ]


def test_qufpn_p3_p7_is_the_official_graph():
    """official tf2/fpn_configs_test.py::test_qufpn_dynamic_l3l7."""
    nodes = [(n.level, list(n.input_ids)) for n in qufpn(3, 7).nodes]
    assert nodes == [
        (6, [3, 4]), (5, [2, 5]), (4, [1, 6]), (3, [0, 7]),
        (4, [1, 7, 8]), (5, [2, 6, 9]), (6, [3, 5, 10]), (7, [4, 11]),
        (4, [1, 0]), (5, [2, 13]), (6, [3, 14]), (7, [4, 15]),
        (6, [3, 15, 16]), (5, [2, 14, 17]), (4, [1, 13, 18]), (3, [0, 19]),
        (7, [12, 16]), (6, [11, 17]), (5, [10, 18]), (4, [9, 19]), (3, [8, 20]),
    ]
    assert qufpn(3, 7).output_ids() == [25, 24, 23, 22, 21]  # the last (sum) node per level


def test_bifpn_dyn_is_the_official_legacy_name_of_bifpn():
    assert get_topology("bifpn_dyn", 3, 7) == bifpn(3, 7)


@pytest.mark.parametrize("build", [bifpn, qufpn, fpn, panet])
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
    with pytest.raises(ValueError, match="Unknown fpn_name 'nasfpn'"):
        get_topology("nasfpn", 3, 7)

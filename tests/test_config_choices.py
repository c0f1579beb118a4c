"""Each hparam with a fixed set of values lists in config.py exactly the values its implementation
knows: a value config accepts always runs, and a new implementation is always reachable."""

import pytest

from efficientdet_tf import config as config_module
from efficientdet_tf.data.augmentation import autoaugment
from efficientdet_tf.inference import postprocess
from efficientdet_tf.model import bifpn, efficientnet, fpn_topology, layers
from efficientdet_tf.training import learning_rate, losses, step

IMPLEMENTED = {
    "act_type": layers.ACTIVATIONS,
    "backbone_name": efficientnet.EFFICIENTNET_SPECS,
    "fpn_name": fpn_topology.TOPOLOGIES,
    "autoaugment_policy": autoaugment.POLICIES,
    "lr_decay_method": learning_rate.DECAYS,
    "fpn_weight_method": bifpn.FUSIONS,
    "optimizer": step.OPTIMIZERS,
    "iou_loss_type": losses.IOU_LOSS_TYPES,
    "nms_configs.method": postprocess.NMS_METHODS,
}


def _accepted(key: str) -> set[str]:
    kind = config_module.SCHEMA
    for part in key.split("."):
        kind = kind[part]
    return set(getattr(kind, "inner", kind).choices)  # an optional key's choices are inside


@pytest.mark.parametrize("key", sorted(IMPLEMENTED))
def test_config_accepts_exactly_the_implemented_values(key):
    assert _accepted(key) == set(IMPLEMENTED[key])

"""Each hparam with a fixed set of values takes its choices from the dict or tuple beside its
implementation: a refused value's error lists exactly the implemented names, and every name the
config accepts runs."""

import re

import numpy as np
import pytest

from efficientdet_tf.config import ConfigError, get_config
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


@pytest.mark.parametrize("key", sorted(IMPLEMENTED))
def test_an_unknown_choice_is_refused_listing_exactly_the_implemented_names(key):
    with pytest.raises(ConfigError, match=rf"hparam '{key}' = 'nothing' has the wrong type: "
                                          r"expected one of ") as error:
        get_config("efficientdet-d0", f"{key}=nothing")
    choices = str(error.value).split("expected one of ")[1].split(" (null:")[0]
    listed = re.findall(r"'([\w-]+)'", choices)
    assert listed == list(IMPLEMENTED[key])


@pytest.mark.parametrize("key", sorted(IMPLEMENTED))
def test_every_implemented_name_is_accepted(key):
    for name in IMPLEMENTED[key]:
        config = get_config("efficientdet-d0", f"{key}={name}")
        group, _, leaf = key.rpartition(".")
        assert (config[group] if group else config)[leaf] == name


def test_every_accepted_activation_and_decay_runs_from_the_config():
    for name in IMPLEMENTED["act_type"]:
        config = get_config("efficientdet-d0", f"act_type={name}")
        assert np.isfinite(np.asarray(layers.ACTIVATIONS[config.act_type](np.ones(3)))).all()
    for name in IMPLEMENTED["lr_decay_method"]:
        config = get_config("efficientdet-d0", f"lr_decay_method={name}")
        schedule = learning_rate.WarmupSchedule(config, 64, steps_per_epoch=10, num_epochs=3)
        assert 0 < float(schedule(25)) <= config.learning_rate

"""The small D0 variants that tests build and train: D0's layers with one BiFPN cell and one
head repeat, for 3 classes (the synthetic shapes); `spread_scores` gives one distinct scores
without training (cheaper than the training that gives a model confident ones); `shapes_only`
builds a model whose parameters are counted, not run."""

import contextlib

import keras

from efficientdet_tf.data.preprocess import preprocess_images
from efficientdet_tf.data.sources.synthetic import SyntheticShapes

_ONE_REPEAT = "num_classes=3,fpn_cell_repeats=1,box_class_repeats=1"
TINY = f"image_size=64,{_ONE_REPEAT}"
# 128 px where detections are compared with TFLite's: at 64, its hard NMS keeps fewer than the
# 100 boxes (the anchors overlap too much) and float16 scores leave the tolerance.
SMALL = f"image_size=128,{_ONE_REPEAT}"
# No random flip or scale jitter: two runs see the same pixels and can be compared exactly.
NO_AUGMENTATION = "input_rand_hflip=false,jitter_min=1.0,jitter_max=1.0"
# A backbone of five single blocks (one per stride), for the tests that compile the training
# step with XLA (JAX): compiling it for B0's 16 blocks takes a minute on 2 cores.
FIVE_BLOCK_BACKBONE = {"backbone_config": {"blocks": [
    "r1_k3_s11_e1_i32_o16_se0.25", "r1_k3_s22_e6_i16_o24_se0.25", "r1_k3_s22_e6_i24_o40_se0.25",
    "r1_k3_s22_e6_i40_o80_se0.25", "r1_k3_s22_e6_i80_o112_se0.25"]}}


def spread_scores(model, config):
    """Batch-norm statistics of a batch of synthetic images (features of unit scale), then the
    class predictions scaled down (scores between about 0.005 and 0.97) and the box predictions
    zeroed (boxes are the anchors, clipped: never empty, which would score as misses)."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    source = SyntheticShapes(4, config.image_size, seed=9)
    model(preprocess_images([source.render(i) for i in range(4)], config)[0], training=True)
    for weight in model.weights:
        for prefix, factor in (("class_net/class-predict/", 0.3), ("box_net/box-predict/", 0.0)):
            if weight.path.startswith(prefix + "pointwise_kernel"):
                weight.assign(weight * factor)


@contextlib.contextmanager
def shapes_only():
    """Models built inside get variables of shapes only (a StatelessScope that does not
    initialize them): filling them is most of a large model's build time, and counting parameters
    reads shapes. Clears the session before and after, which forgets the unfilled variables."""
    keras.backend.clear_session()
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        keras.backend.clear_session()

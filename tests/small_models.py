"""The small D0 variants that tests build and train: D0's layers with one BiFPN cell and one
head repeat, for 3 classes (the synthetic shapes)."""

_ONE_REPEAT = "num_classes=3,fpn_cell_repeats=1,box_class_repeats=1"
TINY = f"image_size=64,{_ONE_REPEAT}"
# 128 px where detections are compared with TFLite's: at 64, its hard NMS keeps fewer than the
# 100 boxes (the anchors overlap too much) and float16 scores leave the tolerance.
SMALL = f"image_size=128,{_ONE_REPEAT}"
# No random flip or scale jitter: two runs see the same pixels and can be compared exactly.
NO_AUGMENTATION = "input_rand_hflip=false,jitter_min=1.0,jitter_max=1.0"

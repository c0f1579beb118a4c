"""Detection and segmentation in one model: the synthetic demo's recipe with the segmentation head
added, trained from scratch on a CPU, printing both losses and AP and mIoU per validation.

    python examples/two_heads.py
"""

from __future__ import annotations

import time

import yaml

from efficientdet_tf import ObjectDetector
from efficientdet_tf.config import HPARAMS_DIR


def main() -> None:
    hparams = yaml.safe_load((HPARAMS_DIR / "demo" / "synthetic.yaml").read_text())
    hparams.update(heads=["object_detection", "segmentation"], seg_num_classes=4)
    detector = ObjectDetector("efficientdet-d0", hparams)
    start = time.time()
    history = detector.fit("synthetic:train", epochs=hparams["num_epochs"], batch_size=16,
                           seed=0, verbose=2, validation_data="synthetic:val",
                           validation_freq=hparams["map_freq"])
    print(f"fit: {time.time() - start:.0f} s")
    for key in ("det_loss", "seg_loss", "val_AP", "val_AP50", "val_mIoU"):
        print(f"{key:10s}", " ".join(f"{value:.3f}" for value in history.history[key]))


if __name__ == "__main__":
    main()

"""Input pipeline throughput: training images per second, with and without augmentation.

    python benchmarks/input_pipeline.py            # COCO128 (shared/datasets/coco128) at 512x512

It also measures, in the same run, the images per second that a training step of the model
consumes at the same size and batch (`benchmarks/train_step.py`), and prints the ratio: the
pipeline must outpace training by a wide margin to never be the bottleneck.

Every figure includes reading, JPEG decoding, resizing and anchor labelling; they differ only in
the augmentation: 'full' is AutoAugment v0 + horizontal flip + scale jitter, 'default' the
official recipe (flip + scale jitter), 'none' neither (the image is only resized to fit).
`images_per_second` is the function to reuse for other comparisons.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from train_step import train_images_per_second

from efficientdet_tf.config import get_config
from efficientdet_tf.data.pipeline import build_dataset, source_from_spec

COCO128 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco128"
DEFAULT_SPEC = f"coco:{COCO128 / 'annotations' / 'instances.json'}:{COCO128 / 'images'}"

AUGMENTATIONS = {
    "full": "autoaugment_policy=v0,input_rand_hflip=true",
    "default": "autoaugment_policy=null,input_rand_hflip=true",
    "none": "autoaugment_policy=null,input_rand_hflip=false,jitter_min=1.0,jitter_max=1.0",
}


def images_per_second(
    spec: str, config, batch_size: int, num_batches: int, warmup_batches: int = 3
) -> float:
    """Training-pipeline images per second over `num_batches`, after `warmup_batches`."""
    dataset = build_dataset(source_from_spec(spec, config), config, is_training=True,
                            batch_size=batch_size)
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    return num_batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_SPEC, help="dataset spec (default COCO128)")
    parser.add_argument("--model", default="efficientdet-d0")
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_batches", type=int, default=40)
    args = parser.parse_args()
    rates = {}
    for name, augmentation in AUGMENTATIONS.items():
        config = get_config(args.model, f"image_size={args.image_size},{augmentation}")
        rates[name] = images_per_second(args.dataset, config, args.batch_size, args.num_batches)
        print(f"augmentation {name:8s} {rates[name]:8.1f} images/s  ({augmentation})")
    config = get_config(args.model, f"image_size={args.image_size}")
    training = train_images_per_second(config, args.batch_size)
    print(f"{args.model} training step consumes {training:.2f} images/s at batch "
          f"{args.batch_size}: the full-augmentation pipeline delivers "
          f"{rates['full'] / training:.1f}x that")


if __name__ == "__main__":
    main()

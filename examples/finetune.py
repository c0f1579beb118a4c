"""Fine-tune EfficientDet from Python, the README's example end to end: fit with validation,
evaluate, save and export, printing the COCO metrics.

    python examples/finetune.py                          # D0 from scratch on the synthetic data
    python examples/finetune.py --pretrained --model_name=efficientdet-lite0 \\
        --train=voc:annotations:images:train:10% --val=voc:annotations:images:val:10%

By default it runs the synthetic demo's recipe (`demo/synthetic.yaml`), which reaches AP50 > 0.9
on `synthetic:val` in 6 epochs on a CPU. `--pretrained` starts from the official COCO weights of
`--model_name` (downloaded once), with the class head re-initialized for the data's classes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from efficientdet_tf import ObjectDetector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default="efficientdet-d0")
    parser.add_argument("--hparams", default="demo/synthetic.yaml")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from the official COCO weights of --model_name")
    parser.add_argument("--num_classes", type=int, default=3)
    parser.add_argument("--train", default="synthetic:train", help="training data spec")
    parser.add_argument("--val", default="synthetic:val", help="validation data spec")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output_dir", default="runs/finetune")
    args = parser.parse_args()

    start = time.time()
    if args.pretrained:
        detector = ObjectDetector.from_pretrained(args.model_name, num_classes=args.num_classes,
                                                  hparams=args.hparams)
    else:
        detector = ObjectDetector(args.model_name, hparams=args.hparams)
    history = detector.fit(args.train, validation_data=args.val, validation_freq=2,
                           epochs=args.epochs, batch_size=args.batch_size)
    metrics = detector.evaluate(args.val)
    print(f"{time.time() - start:.0f} s")
    validated = [e for e in range(1, args.epochs + 1) if e % 2 == 0 or e == args.epochs]
    for epoch, ap50 in zip(validated, history.history["val_AP50"]):
        print(f"epoch {epoch}: val_AP50 {ap50:.4f}")
    print(", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    detector.save(f"{args.output_dir}/detector.keras")
    print("exported:", detector.export(args.output_dir, formats=("saved_model", "tflite_float32")))


if __name__ == "__main__":
    main()

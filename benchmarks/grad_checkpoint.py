"""Peak memory and step time of training with and without `grad_checkpoint`, on the CPU.

    python benchmarks/grad_checkpoint.py     # EfficientDet-D4, 1024x1024, batch 2

Each setting trains in its own process (GPUs hidden), so its peak resident memory (VmHWM) is
its own: model, optimizer, weight average and the activations a training step keeps for the
backward pass, which `grad_checkpoint` recomputes instead. The step time is the median of
`--steps` steps after one warm-up step (`train_step.train_images_per_second`: forward, loss,
backward, clipping, SGD, EMA).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _peak_resident_gib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 2**20  # kB -> GiB


def _measure(args) -> dict:
    """Runs in the child process: one setting's step time and peak memory."""
    from train_step import train_images_per_second

    from efficientdet_tf.config import get_config

    config = get_config(args.model, f"image_size={args.image_size},"
                                    f"grad_checkpoint={args.grad_checkpoint}")
    rate = train_images_per_second(config, args.batch_size, warmup=1, steps=args.steps)
    return {"step_seconds": args.batch_size / rate, "peak_gib": _peak_resident_gib()}


def _run_setting(args, grad_checkpoint: bool) -> dict:
    command = [sys.executable, __file__, "--child", f"--grad_checkpoint={grad_checkpoint}",
               f"--model={args.model}", f"--image_size={args.image_size}",
               f"--batch_size={args.batch_size}", f"--steps={args.steps}"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"grad_checkpoint={grad_checkpoint} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientdet-d4")
    parser.add_argument("--image_size", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--grad_checkpoint", default="false", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args)))
        return
    print(f"{args.model} {args.image_size}x{args.image_size} batch {args.batch_size}, CPU, "
          f"median of {args.steps} training steps")
    for grad_checkpoint in (False, True):
        figures = _run_setting(args, grad_checkpoint)
        print(f"grad_checkpoint={str(grad_checkpoint).lower():5}  "
              f"peak memory {figures['peak_gib']:5.1f} GiB  "
              f"step {figures['step_seconds']:6.1f} s", flush=True)


if __name__ == "__main__":
    main()

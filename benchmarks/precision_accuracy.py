"""COCO AP of every exported precision against its checkpoint, through the command line.

    python benchmarks/precision_accuracy.py --model_name=runs/demo/config.yaml --ckpt=runs/demo \
        --val_file_pattern=synthetic:val --calibration_file_pattern=synthetic:train \
        --export_dir=runs/demo/precisions

Exports the checkpoint to every format and precision (`--mode=export`: SavedModel; TFLite
float32 and int8; ONNX float32 and int8; OpenVINO float32 and int8, the int8 files calibrated on
--num_calibration_steps images of --calibration_file_pattern), evaluates each with `--mode=eval` on
the same images (OpenVINO's IRs at f32 and at bf16, `--inference_precision`), and prints a table:
AP, AP50, the file's size and the change in AP from the checkpoint with the same NMS. Soft-NMS
files (SavedModel, OpenVINO) are compared with the checkpoint as configured, hard-NMS files
(TFLite's detection op, ONNX's NonMaxSuppression) with the checkpoint at
`nms_configs.method=hard`. The commands run in order and each is printed before it runs.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CLI = [sys.executable, "-m", "efficientdet_tf"]
HARD_NMS = "nms_configs.method=hard"


@dataclass(frozen=True)
class Row:
    """One line of the table: what is evaluated and how."""
    label: str
    file: str | None  # relative to the export directory; None: the checkpoint
    hard_nms: bool  # the file (or checkpoint) runs hard NMS
    flags: tuple[str, ...] = ()


ROWS = (
    Row("checkpoint (soft-NMS, the default)", None, False),
    Row("checkpoint, nms_configs.method=hard", None, True),
    Row("SavedModel", ".", False),
    Row("TFLite float32", "float32.tflite", True),
    Row("TFLite int8", "int8.tflite", True),
    Row("ONNX Runtime float32", "model.onnx", True),
    Row("ONNX Runtime int8", "model_int8.onnx", True),
    Row("OpenVINO float32", "openvino/model.xml", False),
    Row("OpenVINO bf16", "openvino/model.xml", False, ("--inference_precision=bf16",)),
    Row("OpenVINO int8", "openvino_int8/model.xml", False),
)


def run(arguments: list[str]) -> str:
    """The command line's output for `arguments`; a failure ends the script with its output."""
    print("$", shlex.join(["efficientdet", *arguments]), flush=True)
    done = subprocess.run([*CLI, *arguments], capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"exit {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def metrics(output: str) -> dict[str, float]:
    """The `name value` lines that --mode=eval prints."""
    values = {}
    for line in output.splitlines():
        name, _, value = line.rpartition(" ")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            continue
    return values


def export_all(args, model_flags: list[str]) -> None:
    common = [*model_flags, "--mode=export", f"--ckpt={args.ckpt}",
              f"--saved_model_dir={args.export_dir}"]
    run([*common, "--tflite=float32", "--onnx", "--openvino"])
    run([*common, "--tflite=int8", "--onnx", "--onnx_precision=int8", "--openvino",
         "--openvino_precision=int8", f"--file_pattern={args.calibration_file_pattern}",
         f"--num_calibration_steps={args.num_calibration_steps}"])


def evaluate(args, model_flags: list[str], row: Row) -> dict[str, float]:
    flags = [*model_flags, "--mode=eval", f"--val_file_pattern={args.val_file_pattern}",
             f"--batch_size={args.batch_size}", *row.flags]
    if row.file is None:
        flags.append(f"--ckpt={args.ckpt}")
        if row.hard_nms:
            flags.append(f"--hparams={HARD_NMS}")
    else:
        flags.append(f"--saved_model_dir={Path(args.export_dir, row.file)}")
    return metrics(run(flags))


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    return sum(p.stat().st_size for p in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", required=True, help="the run's config.yaml")
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--val_file_pattern", required=True, help="held-out images")
    parser.add_argument("--calibration_file_pattern", required=True,
                        help="int8 calibration images (training images, not the held-out ones)")
    parser.add_argument("--num_calibration_steps", type=int, default=100)
    parser.add_argument("--export_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()

    model_flags = [f"--model_name={args.model_name}"]
    export_all(args, model_flags)
    results = {row: evaluate(args, model_flags, row) for row in ROWS}
    # The checkpoint's AP with each NMS, which the files with that NMS are compared with.
    reference = {row.hard_nms: values["AP"] for row, values in results.items() if row.file is None}

    print(f"\n{args.model_name} on {args.val_file_pattern} (int8 calibrated on "
          f"{args.num_calibration_steps} images of {args.calibration_file_pattern})\n")
    print("| model | AP | AP50 | AP change | file |\n|---|---|---|---|---|")
    for row, values in results.items():
        change = "" if row.file is None else f"{values['AP'] - reference[row.hard_nms]:+.4f}"
        size = ("" if row.file in (None, ".")  # the SavedModel's folder holds the other files
                else f"{size_mb(Path(args.export_dir, row.file)):.1f} MB")
        print(f"| {row.label} | {values['AP']:.4f} | {values['AP50']:.4f} | {change} | {size} |")


if __name__ == "__main__":
    main()

"""Seconds to build a model from its hparams (`build_model`): what every start-up pays.

    python benchmarks/build_time.py                       # D0, D4, D7x at their image sizes
    python benchmarks/build_time.py --models=efficientdet-lite0 --repeats=5

Each model is built `--repeats` times after one warm-up build of D0 (imports, first-use costs),
in a fresh Keras session each time; the median is printed. The image size does not change the
figure: building creates the variables and follows shapes, it runs no convolution.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras

from efficientdet_tf import build_model, get_config


def build_seconds(name: str, repeats: int) -> float:
    """The median wall time of building `name` (official hparams), each in a fresh session."""
    times = []
    for _ in range(repeats):
        keras.backend.clear_session()
        start = time.perf_counter()
        build_model(get_config(name))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientdet-d0,efficientdet-d4,efficientdet-d7x")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    build_seconds("efficientdet-d0", 1)  # warm-up
    for name in args.models.split(","):
        print(f"{name}: {build_seconds(name, args.repeats):.2f} s to build "
              f"(median of {args.repeats})")


if __name__ == "__main__":
    main()

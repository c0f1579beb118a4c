"""Latency measurement: medians over runs after warm-up, several functions interleaved.

Round-robin interleaving makes slow drift of the machine (other processes, clock changes) hit every
function alike, so that ratios between them stay meaningful on a shared machine.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf

# A pause between timed calls lets the previous call's worker threads go idle (TF's thread pools
# spin for a while after their work), so that no call pays for the one before it.
PAUSE_SECONDS = 0.02


def materialize(outputs: Any) -> None:
    """Waits for every tensor of a (nested) output: TF may return before the work is done."""
    for value in tf.nest.flatten(outputs, expand_composites=True):
        np.asarray(value)


def interleaved_medians(
    functions: dict[str, Callable[[], Any]], runs: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of each no-argument function, timed in round-robin order."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}.")
    for function in functions.values():
        for _ in range(warmup):
            materialize(function())
    times = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            time.sleep(PAUSE_SECONDS)
            start = time.perf_counter()
            materialize(function())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}

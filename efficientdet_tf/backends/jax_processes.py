"""Training on JAX in several processes: joining them through JAX's distributed runtime.

Keras's environment variables describe the processes, as `keras.distribution.initialize()` reads
them: `KERAS_DISTRIBUTION_JOB_ADDRESSES` (the coordinator's host:port, or every process's, the
coordinator's first), `KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`
(0 for the coordinator). On a TPU pod slice JAX finds its hosts itself, and none is needed.

JAX's runtime ends the process from C++ (no Python error) when a peer never answers, so the
mistakes that can be seen first are refused before it starts, each in one line naming the
variable to check: a variable missing or out of range, a coordinator that does not answer
within the timeout, a coordinator's port already taken, a number of processes that differs from
the coordinator's. Every process then takes the same random seed, so that their initial weights
agree.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time

import jax
import keras
import numpy as np
from jax.experimental import multihost_utils

from efficientdet_tf.errors import ConfigError

log = logging.getLogger(__name__)

ADDRESSES_VARIABLE = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
COUNT_VARIABLE = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ID_VARIABLE = "KERAS_DISTRIBUTION_PROCESS_ID"
VARIABLES = (ADDRESSES_VARIABLE, COUNT_VARIABLE, ID_VARIABLE)
_NAMED = ", ".join(VARIABLES)
_RETRY_S = 0.5  # between tries to reach the coordinator


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """The processes of a run, as Keras's environment variables describe them."""

    coordinator: str  # host:port of process 0
    num_processes: int
    process_id: int

    @classmethod
    def from_environment(cls, environ=os.environ) -> "ProcessGroup":
        missing = [name for name in VARIABLES if not environ.get(name)]
        if missing:
            raise ConfigError(
                f"--strategy=multi-worker on JAX joins the processes that {_NAMED} describe, and "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: set all "
                "three in every process (process 0 is the coordinator; its host:port first), or "
                "use --strategy=tpu on a TPU pod slice, where JAX finds its hosts itself.")
        coordinator = environ[ADDRESSES_VARIABLE].split(",")[0].strip()
        group = cls(coordinator, _integer(environ, COUNT_VARIABLE),
                    _integer(environ, ID_VARIABLE))
        group.check(environ[ADDRESSES_VARIABLE])
        return group

    def check(self, addresses: str) -> None:
        if self.num_processes < 1:
            raise ConfigError(f"{COUNT_VARIABLE}={self.num_processes}: give the number of "
                              "processes of the run, 1 or more.")
        if not 0 <= self.process_id < self.num_processes:
            raise ConfigError(f"{ID_VARIABLE}={self.process_id} is not one of the "
                              f"{self.num_processes} processes of {COUNT_VARIABLE}: number them "
                              f"0 to {self.num_processes - 1}, the coordinator 0.")
        listed = len(addresses.split(","))
        if listed > 1 and listed != self.num_processes:
            raise ConfigError(f"{ADDRESSES_VARIABLE} lists {listed} addresses and "
                              f"{COUNT_VARIABLE} is {self.num_processes}: give one address per "
                              "process, or the coordinator's alone.")
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{ADDRESSES_VARIABLE}={addresses}: the coordinator's address "
                              "must be host:port, e.g. 10.0.0.1:1234.")

    @property
    def host_and_port(self) -> tuple[str, int]:
        host, _, port = self.coordinator.rpartition(":")
        return host.strip("[]"), int(port)


def join(group: ProcessGroup, timeout_s: int) -> None:
    """Joins this process to `group` through JAX's distributed runtime (before any JAX
    computation), waiting up to `timeout_s` for the others; then seeds every process alike."""
    if group.process_id == 0:
        _require_free_port(group)
    else:
        _wait_for_coordinator(group, timeout_s)
    log.info("Joining the %d processes of %s as process %d; waiting up to %d s for all of them "
             "(--process_join_timeout).", group.num_processes, group.coordinator,
             group.process_id, timeout_s)
    _initialize(lambda: jax.distributed.initialize(
        group.coordinator, group.num_processes, group.process_id,
        initialization_timeout=timeout_s, heartbeat_timeout_seconds=timeout_s))
    if jax.process_count() != group.num_processes:
        raise ConfigError(f"{COUNT_VARIABLE}={group.num_processes} here, but the coordinator at "
                          f"{group.coordinator} counts {jax.process_count()} processes: set the "
                          "same number in every process.")
    _share_random_seed()


def join_tpu_hosts(timeout_s: int) -> None:
    """Joins the hosts of a TPU pod slice (one process each), which JAX finds from the TPU VM's
    environment; on one TPU VM, its one process."""
    def initialize():
        try:
            jax.distributed.initialize(initialization_timeout=timeout_s)
        except ValueError as error:  # no cluster environment found
            raise ConfigError(
                f"--strategy=tpu on JAX found no TPU VM to join ({error}). Run it on a Cloud TPU "
                f"VM (every host of a pod slice runs the same command), or set {_NAMED} for "
                "--strategy=multi-worker.") from None

    _initialize(initialize)
    _share_random_seed()


def _initialize(start) -> None:
    try:
        start()
    except RuntimeError as error:  # JAX ran before (e.g. in a notebook), or joined already
        raise ConfigError(f"JAX's distributed runtime did not start: {error}. Start a new "
                          "process; join before any JAX computation.") from None


def _integer(environ, name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ConfigError(f"{name}={environ[name]!r} is not an integer.") from None


def _wait_for_coordinator(group: ProcessGroup, timeout_s: int) -> None:
    """Tries to reach the coordinator's port until `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(group.host_and_port, timeout=_RETRY_S):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"Process {group.process_id} reached no coordinator at {group.coordinator} "
                    f"in {timeout_s} s ({error.strerror or error}): start process 0 there, and "
                    f"check {_NAMED} in every process.") from None
            time.sleep(_RETRY_S)


def _require_free_port(group: ProcessGroup) -> None:
    """The coordinator's port must be free to bind (another run may listen on it; the closed
    connections of a run just ended do not count, as for JAX's own server)."""
    host, port = group.host_and_port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            raise ConfigError(
                f"The coordinator's port {port} ({ADDRESSES_VARIABLE}={group.coordinator}) "
                f"cannot be used here: {error.strerror or error}. Choose a free port for every "
                "process.") from None


def _share_random_seed() -> None:
    """Every process takes the coordinator's random draw as Keras's seed, so that the weights
    initialized from random numbers agree across processes (--tf_random_seed, set later, is
    the same in every process anyway)."""
    draw = np.uint32(np.random.SeedSequence().entropy % 2**32)
    keras.utils.set_random_seed(int(multihost_utils.broadcast_one_to_all(draw)))

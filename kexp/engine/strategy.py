"""Internal: choosing a `tf.distribute` strategy, and logical CPU devices for testing.

Strategy names accepted everywhere (CLI `--strategy`, `open_run(strategy=)`):

- `auto`: `MirroredStrategy` over all GPUs when more than one, `OneDeviceStrategy`
  on one GPU, the default strategy on CPU.
- `default`: TensorFlow's default (no-op) strategy.
- `one_device`: `OneDeviceStrategy` on the first GPU, else the CPU.
- `mirrored`: `MirroredStrategy` over all GPUs; with no GPU, over all logical
  CPU devices (see `KEXP_CPU_DEVICES`).
- `multi_worker`: `MultiWorkerMirroredStrategy` configured by `TF_CONFIG`.
"""

from __future__ import annotations

import os
from typing import Any

from kexp.config_values import ascii_int, key_name, shown  # the one rule for cutting echoed values
from kexp.errors import UsageError
from kexp.store.rundir import parse_json

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
CPU_DEVICES_ENV = "KEXP_CPU_DEVICES"
# Logical CPU devices are for testing replicas; each costs a thread pool and memory.
MAX_CPU_DEVICES = 64
_CREATED: dict[str, Any] = {}


def configure_cpu_devices(count: int) -> None:
    """Splits the physical CPU into `count` logical devices.

    Must run before TensorFlow initializes its devices; two logical CPU
    devices make `MirroredStrategy` testable without GPUs.

    Args:
        count: Number of logical CPU devices, at least 1.

    Raises:
        UsageError: When `count` is not a positive integer.
        UsageError: When `count` is out of range, or TensorFlow's devices were
            already initialized with a different count.
    """
    _check_count(count)
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        # Devices are already initialized; fine if they match the request.
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise UsageError(
                f"{CPU_DEVICES_ENV}={count}: TensorFlow's devices were set up already, with {have} logical "
                f"CPU device{'s' if have > 1 else ''}; allowed: set it before anything in the process uses "
                "TensorFlow") from None


def cpu_devices_from_env() -> int | None:
    """Reads `KEXP_CPU_DEVICES=N` from the environment, without TensorFlow.

    Returns:
        N, or None when the variable is unset or blank.

    Raises:
        UsageError: When N is not an integer in 1..`MAX_CPU_DEVICES`.
    """
    raw = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if not raw:
        return None
    try:
        count = ascii_int(raw)
    except ValueError:
        raise UsageError(f"{CPU_DEVICES_ENV}: received {shown(raw)}; allowed: an integer 1..{MAX_CPU_DEVICES}") from None
    _check_count(count)
    return count


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_CPU_DEVICES:
        raise UsageError(f"{CPU_DEVICES_ENV}: received {count}; allowed: an integer 1..{MAX_CPU_DEVICES}")


def configure_from_env() -> None:
    """Applies `KEXP_CPU_DEVICES=N` from the environment, if set."""
    count = cpu_devices_from_env()
    if count is not None:
        configure_cpu_devices(count)


def check_strategy_name(name: str) -> None:
    """Checks a strategy name, `KEXP_CPU_DEVICES` (and `TF_CONFIG` for `multi_worker`) without TensorFlow.

    Raises:
        UsageError: For an unknown name, a bad `KEXP_CPU_DEVICES` or a
            missing/invalid `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise UsageError(f"--strategy: received {name!r}; allowed: {', '.join(STRATEGIES)}")
    cpu_devices_from_env()  # a bad value fails here, not after seconds of TensorFlow import
    if name == "multi_worker":
        _check_tf_config()
        if name not in _CREATED:  # once it exists, this process's own server holds the port
            _check_own_port_free()


def make_strategy(name: str) -> Any:
    """Returns the `tf.distribute.Strategy` for a strategy name.

    Args:
        name: One of `STRATEGIES`.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        UsageError: For an unknown name, or `multi_worker` without a valid
            `TF_CONFIG`.
    """
    check_strategy_name(name)
    import tensorflow as tf

    configure_from_env()
    if name == "multi_worker" and name not in _CREATED:
        # Before anything lists logical devices: that starts TensorFlow's
        # context, and collective ops must be configured before it starts.
        _CREATED[name] = tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device" if gpus else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name not in _CREATED:
        # One instance per process: a second MirroredStrategy over the same
        # devices reuses collective instance keys, and its all-reduces then
        # collide with the first one's ("Shape mismatch in the collective").
        if name == "mirrored":
            devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
            _CREATED[name] = tf.distribute.MirroredStrategy(devices=devices)
        else:
            _CREATED[name] = tf.distribute.MultiWorkerMirroredStrategy()
    return _CREATED[name]


def _check_tf_config() -> None:
    """Checks `TF_CONFIG` for what `MultiWorkerMirroredStrategy` needs, without TensorFlow.

    TensorFlow itself fails on a wrong `TF_CONFIG` with a traceback (or waits
    for workers that cannot exist), so its shape is checked here.

    Raises:
        UsageError: One line naming what is missing or wrong and what is allowed.
    """
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        raise UsageError(
            "--strategy multi_worker needs TF_CONFIG (cluster and task) in the environment; "
            "see docs/distributed.md"
        )
    shape = 'JSON {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}'
    try:
        # The shared reader: a deeply nested value is a ValueError, not a RecursionError's traceback.
        tf_config = parse_json(raw)
    except ValueError as err:
        raise UsageError(f"TF_CONFIG: received {shown(raw)} ({err}); allowed: {shape}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UsageError(f"TF_CONFIG: received {shown(raw)}; allowed: {shape}")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses \
                or not all(isinstance(a, str) and _host_port(a) for a in addresses):
            raise UsageError(
                f"TF_CONFIG cluster.{key_name(job)}: received {shown(addresses)}; "
                'allowed: a non-empty list of "host:port" strings (port 1..65535)'
            )
        if job not in ("worker", "chief"):
            raise UsageError(f"TF_CONFIG cluster: received a {shown(job)} job; allowed: worker and chief jobs "
                             "(MultiWorkerMirroredStrategy has no parameter servers)")
    if "worker" not in cluster:
        raise UsageError(f"TF_CONFIG cluster: received {shown(cluster)}; allowed: a cluster with a worker list")
    task_type, index = task.get("type"), task.get("index")
    if not isinstance(task_type, str) or task_type not in cluster:  # a list is unhashable
        raise UsageError(
            f"TF_CONFIG task.type: received {shown(task_type)}; "
            f"allowed: a job of the cluster ({', '.join(key_name(j) for j in cluster)})"
        )
    size = len(cluster[task_type])
    # bool is an int in Python, but `"index": true` is a mistake.
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise UsageError(
            f"TF_CONFIG task.index: received {shown(index)}; "
            f"allowed: an integer 0..{size - 1} (cluster.{key_name(task_type)} has {size} address{'es' if size > 1 else ''})"
        )


def _check_own_port_free() -> None:
    """Checks that this worker's own `TF_CONFIG` address can be bound here, before TensorFlow starts.

    TensorFlow binds its gRPC server to every interface (0.0.0.0) at the
    port of `cluster[task.type][task.index]`; a port already in use is
    otherwise a traceback ("Could not start gRPC server"). Call it after
    `_check_tf_config`, which has checked the address's shape.

    Raises:
        UsageError: One line naming TF_CONFIG, the address and that its port is in use (or not permitted).
    """
    import errno
    import json
    import socket

    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        task_type, index = tf_config["task"]["type"], tf_config["task"]["index"]
        address = tf_config["cluster"][task_type][index]
    except (KeyError, TypeError, ValueError, RecursionError, IndexError):
        return  # _check_tf_config judges the shape
    port = int(address.rpartition(":")[2])
    where = f"TF_CONFIG cluster.{key_name(task_type)}[{index}] (this worker's own address): received {shown(address)}"
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As gRPC does: a port left in TIME_WAIT by an earlier run is free to reuse.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("0.0.0.0", port))
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise UsageError(f"{where}; port {port} is in use on this machine; allowed: a free port") from None
        if err.errno == errno.EACCES:
            raise UsageError(f"{where}; port {port} may not be bound here (permission denied); "
                             "allowed: a port this user may open (usually >= 1024)") from None
        # Anything else is TensorFlow's to report.
    finally:
        probe.close()


def _host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


def is_chief(strategy: Any) -> bool:
    """Returns whether this process writes the run folder.

    Under `MultiWorkerMirroredStrategy` only the chief (worker 0, or the task
    of type `chief`) writes; every other strategy runs one process.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0)


def describe_devices(strategy: Any) -> list[str]:
    """Returns the devices the strategy computes on."""
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:
        # The default strategy places ops itself: first GPU if any, else the CPU.
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return [devices[0].name]

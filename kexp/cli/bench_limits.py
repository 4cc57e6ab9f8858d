"""Internal: what a `kexp bench` request would need in memory, refused before anything is allocated.

NumPy and TensorFlow fail on requests past the machine's memory with tracebacks (`array is too big`, an
OOM while initialising weights) or by being killed; these estimates turn such requests into one line.
No TensorFlow here.
"""

from __future__ import annotations

import os

from kexp.errors import UsageError

__all__ = ["SWEEP_MIN_EXAMPLES", "check_fits"]

# Bytes of one training example (inputs and targets, float32) per case: fnn 784 pixels and a label, the tiny
# models 2 inputs and 1 target, lstm 80 steps of 32 samples in and out, dcgan one 16x16 image.
_EXAMPLE_BYTES = {"fnn": 784 * 4 + 4, "heart_mlp": 12, "xor": 12, "lstm": 2 * 80 * 32 * 4, "dcgan": 16 * 16 * 4}
# The arrays, the harness's cached pipeline, the baseline's copy and a batch in flight.
_DATA_COPIES = 4
# A weight, its gradient and Adam's two slots.
_WEIGHT_COPIES = 4
# The sweep's largest batch (1,024): every measured epoch has at least one full step.
SWEEP_MIN_EXAMPLES = 1_024


def available_bytes() -> int:
    """Returns the memory the system says is available (MemAvailable), or its physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(name: str | None, examples: int | None, width: int, sweep: bool = False) -> None:
    """Refuses a bench request whose data or model cannot fit in memory, or a sweep too small to measure.

    Args:
        name: The case (None for `--sweep`, which trains `fnn`).
        examples: `--examples`, or None for the case's default.
        width: `--width` (fnn's hidden units).
        sweep: Whether this is `--sweep`.

    Raises:
        UsageError: Naming the option, its value and what is allowed.
    """
    case = name or "fnn"
    command = "bench --sweep" if sweep else f"bench {case}"
    if sweep and examples is not None and examples < SWEEP_MIN_EXAMPLES:
        raise UsageError(f"bench --sweep: --examples {examples}: too few to measure its largest batch (1,024) "
                         f"over full steps; allowed: an integer >= {SWEEP_MIN_EXAMPLES}")
    available = available_bytes()
    if examples is not None:
        needed = examples * _EXAMPLE_BYTES[case] * _DATA_COPIES
        if needed > available:
            raise UsageError(f"{command}: --examples {examples}: the case's data (~{_gib(needed)}, with the "
                             f"harness's copies) does not fit in this machine's memory ({_gib(available)} "
                             "available); allowed: fewer examples")
    if case == "fnn":
        needed = ((784 + 1) * width + (width + 1) * 10) * 4 * _WEIGHT_COPIES
        if needed > available:
            raise UsageError(f"{command}: --width {width}: the model (~{_gib(needed)} with its gradients and "
                             f"Adam's slots) does not fit in this machine's memory ({_gib(available)} available); "
                             "allowed: a smaller width")


def _gib(count: int) -> str:
    return f"{count / 2**30:.3g} GiB"

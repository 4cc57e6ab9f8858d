"""Which dtype policy a run trains under: `train.precision`, and what `auto` picks on this machine.

`auto` picks `mixed_bfloat16` only where bfloat16 math is native and no GPU
is visible: an x86 CPU with AVX512_BF16 or AMX-BF16 (oneDNN's bfloat16
matmuls then run at about twice the float32 rate; a bare LSTM step trained
1.5-1.8x faster on a 2-core AVX512_BF16 EPYC). Elsewhere it is `float32`:
on CPUs without them, oneDNN emulates bfloat16 and a step runs slower
(0.8x on a 2-core AVX2 EPYC), and kexp does not choose a GPU's precision
for it. Bundled experiments default to `auto` only where their bars were
checked under `mixed_bfloat16`; a library run's default stays `global`,
the caller's own Keras policy.
"""

from __future__ import annotations

from typing import Any

from pathlib import Path

# CPU flags (Linux's /proc/cpuinfo names) of native bfloat16 dot products.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """Returns the CPU's feature flags, as Linux lists them.

    Args:
        cpuinfo: The text of `/proc/cpuinfo`; read from the file when None.

    Returns:
        The flags of the first processor; empty where the file cannot be
        read (other systems: `auto` then picks float32).
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> list[str]:
    """Returns the flags of native bfloat16 math this CPU has (none: empty).

    Args:
        flags: CPU flags (`cpu_flags()` when None).

    Returns:
        The names among `NATIVE_BF16_FLAGS` the CPU lists.
    """
    flags = cpu_flags() if flags is None else flags
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]


def choose_auto(flags: frozenset[str], gpus: int) -> tuple[str, str]:
    """Returns the policy `train.precision=auto` trains under, and why.

    Args:
        flags: The CPU's flags (`cpu_flags()`).
        gpus: How many GPUs TensorFlow sees.

    Returns:
        `(policy, reason)`: `mixed_bfloat16` on a CPU with native bfloat16
        and no GPU, else `float32`; the reason is one phrase for
        `results.json`.
    """
    if gpus:
        return "float32", "a GPU is visible (auto picks bfloat16 only for CPUs with native bfloat16)"
    native = native_bf16(flags)
    if native:
        return "mixed_bfloat16", f"the CPU has {' and '.join(native)}"
    return "float32", f"the CPU has neither {' nor '.join(NATIVE_BF16_FLAGS)}"


def resolve(setting: str, gpus: int) -> tuple[str | None, str]:
    """Returns the policy a run sets for `train.precision`, and the `set_by` text `results.json` records.

    Args:
        setting: `train.precision`: `global`, `auto` or a Keras policy name.
        gpus: How many GPUs TensorFlow sees (only `auto` asks).

    Returns:
        `(policy, set_by)`: policy is None for `global` (the caller's own
        policy holds, as in plain Keras).
    """
    if setting == "global":
        return None, "the global policy"
    if setting == "auto":
        policy, reason = choose_auto(cpu_flags(), gpus)
        return policy, f"train.precision=auto: {reason}"
    return setting, "train.precision"


def kept_on_resume(recorded: Any, policy: str, set_by: str) -> tuple[str, str]:
    """Returns the policy a resumed `auto` run trains under: the one its first start chose.

    `auto` asks the machine, and a run resumed on another one (or with a GPU
    now visible) would otherwise switch precision halfway and record only
    the second choice.

    Args:
        recorded: The run folder's `results.json` `precision` entry, or None.
        policy: What `auto` picks on this machine.
        set_by: Its `set_by` text.

    Returns:
        `(policy, set_by)`: the first start's where it recorded an `auto`
        choice, with this machine's differing choice added to `set_by`;
        else the arguments.
    """
    if not isinstance(recorded, dict) or recorded.get("policy") not in ("float32", "mixed_bfloat16"):
        return policy, set_by
    first_set_by = recorded.get("set_by")
    if not isinstance(first_set_by, str) or not first_set_by.startswith("train.precision=auto"):
        return policy, set_by
    if recorded["policy"] == policy:
        return policy, first_set_by
    return recorded["policy"], (f"{first_set_by} (kept from the run's first start; on the machine that resumed it "
                                f"auto picks {policy})")

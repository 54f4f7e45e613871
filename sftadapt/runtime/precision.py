"""The precision policy: which dtype each stage computes in, decided in one place from the hardware.

Every stage that samples, scores or trains takes `dtype: auto | float32 | bfloat16` and asks `resolve_dtype`:
- `auto` (the default everywhere) is bf16 only where the hardware runs it natively: a CUDA device with bf16
  support, or a CPU for which torch reports AVX-512 kernels *and* AVX512-BF16 or AMX-BF16 instructions (read
  at run time from torch, never from a CPU name). Everywhere else it is float32. On an AVX2-only CPU bf16 is
  emulated: a 1024x1024 matmul ran 132x slower than fp32 on such a machine (benchmarks/precision.md).
- an explicit `float32` / `bfloat16` is honoured; bf16 on a CPU that emulates it prints one warning.

Training never stores bf16 weights unless asked (`weights_dtype: bfloat16`, with a warning): the weights stay
fp32 (the master copy) and `dtype` is the autocast (mixed-precision) dtype of the forward/backward pass. With
bf16 weights at lr 1e-4 only ~13% of the entries move in a step, so most of a small update is rounded away.

Two choices are not the hardware's. A target scores rewrites (r_align, the gap metric) in float32 under `auto`
(`scoring_dtype`): those log-probs rank rewrites against each other. And `sftadapt run` keeps a study like for
like (pipeline.study_precision): one mapper precision, and one training compute dtype for the SFT-family arms,
float32 for all when one of them (`is`) must train in float32 (`study_training_dtype`); it writes a stage's dtype
only where this machine's own answer differs (`spelled_for_study`), so AVX2-only runs keep their config hashes.

`describe()` is what stages write into their provenance and summaries: the resolved dtype and the capability
it was resolved from.
"""

from __future__ import annotations

import functools
import os
import warnings

DTYPES = ("auto", "float32", "bfloat16")
WEIGHT_DTYPES = ("float32", "bfloat16")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16"}


class PrecisionError(ValueError):
    pass


def normalize(name: str, allowed: tuple[str, ...] = DTYPES, field: str = "dtype") -> str:
    """`name` spelled the canonical way, or a PrecisionError listing the choices."""
    value = _ALIASES.get(str(name), str(name))
    if value not in allowed:
        raise PrecisionError(f"{field} = '{name}': choose one of {', '.join(allowed)}")
    return value


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def capability() -> dict[str, object]:
    """What torch reports about the CPU (and CUDA): the kernel level, the bf16 instructions, the verdict."""
    import torch

    info: dict[str, object] = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    flags = {}
    try:
        flags = torch._C._cpu._get_cpu_capability()  # cpuinfo's view; dict of instruction-set flags
    except Exception:  # noqa: BLE001 - older torch: fall back to the public probes below
        pass
    avx512_bf16 = bool(flags.get("avx512_bf16", getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()))
    amx_bf16 = bool(flags.get("amx_bf16", getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()))
    info.update(
        avx2=bool(flags.get("avx2", info["cpu_capability"] != "DEFAULT")), avx512_bf16=avx512_bf16, amx_bf16=amx_bf16
    )
    # torch's kernel level must be AVX-512 too: ATEN_CPU_CAPABILITY=avx2 (or a CPU without AVX-512) runs the
    # non-matmul bf16 kernels through the emulated AVX2 path even when the instructions exist.
    info["cpu_bf16_native"] = (
        info["cpu_capability"] in ("AVX512", "AMX")
        and (avx512_bf16 or amx_bf16)
        and os.environ.get("SFTADAPT_CPU_BF16", "") != "0"
    )
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_bf16"] = bool(torch.cuda.is_bf16_supported())
    return info


def bf16_native(device: str | None = None) -> bool:
    cap = capability()
    device = device or default_device()
    if str(device).startswith("cuda"):
        return bool(cap.get("cuda_bf16"))
    return bool(cap["cpu_bf16_native"])


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """One warning per process for `key` (a setting a user cannot act on twice)."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def resolve_dtype(requested: str = "auto", device: str | None = None) -> str:
    """'float32' or 'bfloat16' for `requested` on `device` (default: cuda if present, else cpu)."""
    requested = normalize(requested)
    native = bf16_native(device)
    if requested == "auto":
        return "bfloat16" if native else "float32"
    if requested == "bfloat16" and not native:
        cap = capability()
        warn_once(
            "bf16-emulated",
            (
                f"dtype bfloat16 was asked for, but this CPU has no native bf16 (torch reports "
                f"{cap['cpu_capability']}, avx512_bf16={cap['avx512_bf16']}, amx_bf16={cap['amx_bf16']}): bf16 is "
                "emulated, about 100x slower than float32 (132x measured on an AVX2-only CPU). Use dtype: auto."
            ),
        )
    return requested


def resolve_weights_dtype(requested: str = "float32") -> str:
    """Training weights: float32 master weights unless pure bf16 is asked for explicitly (then a warning)."""
    requested = normalize(requested, WEIGHT_DTYPES, "weights_dtype")
    if requested == "bfloat16":
        warn_once(
            "bf16-weights",
            (
                "weights_dtype bfloat16: training pure bf16 weights with no fp32 master copy; at lr 1e-4 only ~13% of "
                "the entries move in a step (most small updates are rounded away). Keep float32 unless you know."
            ),
        )
    return requested


def training_dtypes(dtype: str, weights_dtype: str = "float32") -> tuple[str, str]:
    """(compute, weights) dtypes a trainer runs with here: fp32 master weights with `dtype` as autocast, or
    pure bf16 when the weights themselves are bf16 (then a warning)."""
    compute = resolve_dtype(dtype)
    weights = resolve_weights_dtype(weights_dtype)
    return ("bfloat16" if weights == "bfloat16" else compute), weights


def autocast_bf16(compute: str, weights: str) -> bool:
    """Whether the trainer's `bf16=True` (autocast over fp32 master weights) is what (compute, weights) means."""
    return (compute, weights) == ("bfloat16", "float32")


def scoring_dtype(requested: str = "auto", device: str | None = None) -> str:
    """The dtype a target scores rewrites in (r_align in mapper RL's reward and in synthesis, the gap metric):
    float32 under `auto` on every machine, an explicit value honoured.

    Why not the hardware's answer: r_align is a mean token log-prob that ranks a problem's rewrites against each
    other, and bf16 moves single tokens' log-probs by up to 0.5 nats, as much as the differences it ranks; the
    rewrite stage's `score_dtype` is float32 by default for the same reason."""
    return "float32" if normalize(requested) == "auto" else resolve_dtype(requested, device)


def spelled_for_study(requested: str, resolved: str, device: str | None = None) -> str:
    """What a study writes into a stage's dtype option so that the stage runs in `resolved`.

    The option as it was where this machine's own answer to it is already `resolved`: on an AVX2-only CPU, where
    `auto` is float32 for every stage, a study's stages keep their config hashes. Elsewhere `resolved` spelled
    out: a different computation than the option meant before, so a different hash, and a stage cached from the
    old precision is run again."""
    return requested if resolve_dtype(requested, device) == resolved else resolved


def study_training_dtype(arms: dict[str, tuple[str, bool]]) -> str | None:
    """One training compute dtype for a study's SFT-family arms (`arms`: name -> (its compute dtype as resolved
    here, whether its loss trains in float32 only)): float32 as soon as one arm's loss must train in float32 (`is`:
    π_θ in the precision π_β was scored in), so that the arms differ in their loss and not in their precision;
    None where no arm forces it (then `auto` already gives every arm the hardware's one answer)."""
    return "float32" if any(only for _, only in arms.values()) else None


def torch_dtype(name: str):
    import torch

    name = normalize(name, ("float32", "bfloat16", "float16") + ("auto",))
    if name == "auto":
        name = resolve_dtype("auto")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def cpu_model_name() -> str:
    """The CPU's model name as lscpu shows it (for benchmark records only; never used to decide anything)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def describe(requested: str, resolved: str, device: str | None = None) -> dict[str, object]:
    """The provenance entry of a stage's precision: what was asked, what ran, and why."""
    cap = capability()
    device = device or default_device()
    out = {
        "requested": requested,
        "resolved": resolved,
        "device": device,
        "cpu_capability": cap["cpu_capability"],
        "avx512_bf16": cap["avx512_bf16"],
        "amx_bf16": cap["amx_bf16"],
        "bf16_native": bf16_native(device),
    }
    if cap.get("cuda"):
        out["cuda_device"] = cap.get("cuda_device")
    return out

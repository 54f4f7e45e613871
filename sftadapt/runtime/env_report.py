"""What `sftadapt env` prints: versions, CPU capability, CUDA, the resolved dtype policy, caches, data folder."""

from __future__ import annotations

import os
import sys


def env_lines() -> list[str]:
    import importlib.metadata as md
    import platform

    from sftadapt import __version__
    from sftadapt.runtime import memory
    from sftadapt.runtime.models import cache_dir
    from sftadapt.runtime.precision import capability, cpu_model_name, resolve_dtype

    lines = [f"sftadapt {__version__}", f"python {platform.python_version()} ({sys.executable})"]
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify", "vllm"):
        try:
            lines.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            lines.append(f"{pkg} not installed")
    cap = capability()
    lines += [
        f"cpu: {cpu_model_name()}; torch kernels {cap['cpu_capability']}, avx512_bf16={cap['avx512_bf16']}, "
        f"amx_bf16={cap['amx_bf16']}; bf16 native on cpu: {cap['cpu_bf16_native']}",
        f"cuda: {cap.get('cuda_device', 'none')}" + (f", bf16 {cap.get('cuda_bf16')}" if cap["cuda"] else ""),
        f"dtype auto -> {resolve_dtype('auto')} (sampling, eval, target scoring; rewrite scoring: float32; training: fp32 weights"
        f"{' + bf16 autocast' if resolve_dtype('auto') == 'bfloat16' else ''}; the is loss: float32)",
        f"malloc (SFTADAPT_MALLOC): {memory.applied()}",
        f"cache (SFTADAPT_CACHE): {cache_dir()}",
        f"HF_HOME: {os.environ.get('HF_HOME', '(default)')}",
        f"hub: {'offline' if os.environ.get('HF_HUB_OFFLINE') == '1' else 'online'}",
    ]
    try:
        from sftadapt.data.sources import find_data_dir

        lines.append(f"data folder: {find_data_dir()}")
    except Exception as err:  # noqa: BLE001 - reported, not raised: env is a diagnosis
        lines.append(f"data folder: none ({err})")
    return lines

"""Keep freed memory inside the process: CPU training re-allocates the same large tensors at every step.

A training step on a CPU allocates and frees tensors of tens to hundreds of MB (activations, the vocabulary-sized
logits and their gradients). glibc's malloc serves every block above its mmap threshold (128 KiB, rising to at most
32 MiB) with a fresh `mmap` and gives it back with `munmap` when freed, so the kernel zeroes and faults in the same
gigabytes again at every step. Measured on SmolLM2-135M, 8 rows of 200 tokens, 2 cores (benchmarks/memory.md): one
forward + backward + AdamW step in fp32 took 11.1 s with glibc's defaults and 9.1 s with the two settings below in
one run, 9.19 s and 8.49 s in another a few hours later (6.94 -> 5.84 s and 5.79 -> 5.43 s with bf16 autocast): the
gain follows what a page fault costs on the host at the time.

`keep_freed_memory()` asks glibc (through `mallopt`) to serve large blocks from its heap instead of `mmap`
(`M_MMAP_MAX` 0) and to keep up to 1 GiB of freed memory at the heap's top instead of returning it at once
(`M_TRIM_THRESHOLD`). The cost: the process's resident size stays near its peak between steps. Every `sftadapt`
command calls it at start-up; `SFTADAPT_MALLOC=system` leaves glibc's defaults alone. Other C libraries (musl,
macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
KEEP_BYTES = 1 << 30
_applied = "system (keep_freed_memory was not called)"  # what this process runs with, for `sftadapt env`


def glibc():
    """The C library as a ctypes handle if it is glibc (only glibc has `gnu_get_libc_version`; musl's `mallopt`
    ignores these parameters), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> str:
    """Apply the settings above where the C library is glibc; says what was done (also `applied()` later)."""
    global _applied
    if os.environ.get("SFTADAPT_MALLOC", "").lower() == "system":
        _applied = "system (SFTADAPT_MALLOC=system)"
    elif (libc := glibc()) is None:
        _applied = "system (the C library is not glibc)"
    elif libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) != 1:
        _applied = "system (mallopt refused the settings)"
    else:
        _applied = "kept (glibc heap, no mmap, 1 GiB trim threshold)"
    return _applied


def applied() -> str:
    """The malloc setting this process runs with."""
    return _applied

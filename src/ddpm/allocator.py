"""Keep the memory a CPU run frees, for its next step.

glibc's malloc (Linux) gives a large freed block back to the kernel: blocks above its mmap
threshold are unmapped when freed, and the top of the heap is trimmed once more than its trim
threshold lies free. A network's forward pass on the CPU frees its activations at the end and
asks for the same sizes again at the next step, so every step faults the same pages in afresh:
for the `mnist` U-Net at batch 50 about 20,000 page faults a forward and a fifth of its CPU time
in the kernel, for FID's Inception a third (``benchmarks/cpu_allocator.py``). Raising both
thresholds keeps the freed blocks in the heap, where the next step reuses them; the process then
holds what it freed (Inception's peak: 1.4 -> 2.3 GB; the U-Net's steps: within 12 %). PyTorch's
own advice for CPU work is a caching malloc (jemalloc, tcmalloc) preloaded; this asks the one
that is there.

The command line calls :func:`keep_freed_memory` as it starts. It does nothing off glibc, when
``DDPM_KEEP_FREED_MEMORY=0``, or when the environment already tunes malloc (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``): the user's choice stands.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

__all__ = ["keep_freed_memory", "KEEP_BYTES"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
#: Blocks up to this size come from the heap and stay there when freed (older glibc caps the
#: mmap threshold at 32 MiB; that is tried when this is refused).
KEEP_BYTES = 1 << 30
_USER_TUNES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> int:
    """Raise glibc malloc's mmap and trim thresholds; returns the mmap threshold set, 0 if none."""
    if environ.get("DDPM_KEEP_FREED_MEMORY", "1") == "0" or any(k in environ for k in _USER_TUNES):
        return 0
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return 0
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    for size in (KEEP_BYTES, 32 << 20):
        if mallopt(M_MMAP_THRESHOLD, size) == 1:
            mallopt(M_TRIM_THRESHOLD, max(size, 128 << 20))
            return size
    return 0

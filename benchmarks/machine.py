"""The machine a benchmark ran on, in one line: its speed, and the last bits of its float
results, depend on the CPU (oneDNN picks its kernels by the vector instructions, and its and
Eigen's blocking by the cache sizes) and on the number of CPUs (threads split the sums)."""

from __future__ import annotations

import os
import re
import subprocess

# The flags that change which kernels oneDNN runs (or int8 speed).
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")


def cpu() -> str:
    """``lscpu``'s model name, family and model numbers, CPU count and the vector flags that
    matter here, e.g. ``AMD EPYC family 25 model 1, 2 CPUs (flags: avx2)``; ``unknown CPU``
    parts without ``lscpu``."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        text = ""

    def field(name: str) -> str | None:
        found = re.search(rf"^{name}:\s*(.+)$", text, re.MULTILINE)
        return found.group(1).strip() if found else None

    flags = (field("Flags") or "").split()
    wanted = [f for f in VECTOR_FLAGS if f in flags]
    family, model = field("CPU family"), field("Model")
    name = field("Model name") or "unknown CPU"
    if family and model:
        name += f" family {family} model {model}"
    count = field("CPU\\(s\\)") or str(os.cpu_count() or "?")
    return f"{name}, {count} CPUs (flags: {' '.join(wanted)})"

"""The machine a benchmark ran on, in one line: its speed, and the last bits of its float
results, depend on the CPU's vector instructions (oneDNN picks its kernels by them)."""

from __future__ import annotations

import re
import subprocess


def cpu() -> str:
    """``lscpu``'s model name and the vector flags that matter here, e.g. ``AMD EPYC (flags:
    avx2)``; ``unknown CPU (flags: )`` without ``lscpu``."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        text = ""
    name = re.search(r"Model name:\s*(.+)", text)
    flags = re.search(r"Flags:\s*(.+)", text)
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
              if flags and f in flags.group(1).split()]
    return f"{name.group(1).strip() if name else 'unknown CPU'} (flags: {' '.join(wanted)})"

"""``python benchmarks/ablation`` or ``python -m benchmarks.ablation`` (see the package doc)."""

import sys
from pathlib import Path

if not __package__:  # run as ``python benchmarks/ablation``: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.ablation.cli import main  # noqa: E402

sys.exit(main())

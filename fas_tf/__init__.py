"""fas_tf: facial anatomical landmark detection under scarce labels, for FAS screening.

A heatmap-regression student is regularized by a frozen face-recognition teacher through four
constraints (embedding output, intermediate features, spatial and channel attention), following
Fu et al., IEEE JBHI 2021 (arXiv 2109.05485).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fas_tf import _quiet_tf  # noqa: E402

if sys.argv[:1] == ["-m"]:  # a `python -m fas_tf.X` / `python -m export` run, not a library user
    _quiet_tf.install()  # TensorFlow's start-up I0000 lines, which the variable above misses

__version__ = "0.1.0"

"""Shared test fixtures: paths to ../shared data and small generated datasets."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
INFANFACE = REPO.parent / "shared" / "data" / "infanface-train"

needs_infanface = pytest.mark.skipif(
    not (INFANFACE / "attributes.csv").is_file(),
    reason=f"InfAnFace data not found at {INFANFACE} (licensed data, kept outside the repo)",
)


@pytest.fixture(scope="session")
def demo_faces(tmp_path_factory) -> Path:
    """A folder of 12 synthetic faces (jpg + pts), generated once per session."""
    from fas_tf.demo import make_demo_set

    return make_demo_set(tmp_path_factory.mktemp("demo"), 12, seed=5, size=128)

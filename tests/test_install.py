"""The install declares what the code imports, and a missing package is one line, not a traceback.

`.ci/run` runs this suite in a fresh virtual environment that holds only what `setup.py`
installs, so an undeclared run-time dependency (of ours or of a dependency's own imports, as
`keras_facenet` -> `scipy`) fails here.
"""

import ast
import importlib
import re
import subprocess
import sys
from importlib import metadata

import pytest

from tests.conftest import REPO

OWN = {"fas_tf", "export", "benchmarks", "tests"}


def _top_level_imports(folder: str) -> set[str]:
    names = set()
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - OWN - set(sys.stdlib_module_names) - {"__future__"}


def _declared_requirements() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            specs = ast.literal_eval(node.value)
            return {_normalize(re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0]) for s in specs}
    raise AssertionError("setup.py has no install_requires")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_setup_declares_every_third_party_import():
    imported = _top_level_imports("fas_tf") | _top_level_imports("export")
    declared = _declared_requirements()
    providers = metadata.packages_distributions()
    undeclared = {}
    for name in sorted(imported):
        dists = {_normalize(d) for d in providers.get(name, [])}
        assert dists, f"{name} is imported by the project but no installed package provides it"
        if not dists & declared:
            undeclared[name] = sorted(dists)
    assert not undeclared, f"imported but not in setup.py install_requires: {undeclared}"
    assert {"scipy", "keras-facenet", "mtcnn", "ai-edge-litert"} <= declared


@pytest.mark.parametrize(
    "module", ["keras_facenet", "keras_facenet.inception_resnet_v1", "mtcnn",
               "ai_edge_litert.interpreter", "cv2", "PIL.Image", "matplotlib.pyplot"],
)
def test_dependencies_import_with_their_own_imports(module):
    """In CI's fresh environment this fails if a dependency needs an undeclared package."""
    importlib.import_module(module)


BLOCKED_RUN = (
    "import sys, runpy; sys.modules['keras_facenet'] = None; "
    "sys.argv = ['fas_tf.train'] + sys.argv[1:]; "
    "runpy.run_module('fas_tf.train', run_name='__main__', alter_sys=True)"
)


def test_missing_package_is_one_line_with_the_install_command(demo_faces, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, f"--data={demo_faces}", "--teacher=facenet",
         "--epochs=1", "--input_size=32", "--student=mobilenetv2", f"--output_dir={out}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr[-2000:]
    assert "pip install keras-facenet" in error_lines[0]

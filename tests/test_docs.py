"""The shell commands of README.md and docs/ that run quickly are run here: every ``--help``,
and the README's main job (the demo set) in its one-epoch form. The others need the licensed
InfAnFace data or hours; the recipes they name are run on tiny data by tests/test_recipes.py."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from .conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _commands(text: str) -> list[str]:
    """``python ...`` commands of a Markdown text: lines of ```bash blocks (continuations
    joined, comments dropped) and inline code spans."""
    found = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("python"):
                found.append(" ".join(line.split()))
    found += [" ".join(c.split()) for c in re.findall(r"`(python [^`]+)`", text)]
    return found


COMMANDS = sorted({(path.relative_to(REPO).as_posix(), c)
                   for path in DOCS for c in _commands(path.read_text(encoding="utf-8"))})
HELP = sorted({c for _, c in COMMANDS if "--help" in c.split()})


def test_the_docs_name_the_commands_this_file_runs():
    assert ("README.md", "python -m fas_tf.train") in COMMANDS
    assert ("README.md", "python -m fas_tf.train --epochs=1") in COMMANDS
    assert "python -m fas_tf.train --help" in HELP
    assert all("$" not in c and "[" not in c for c in HELP)  # runnable as written


@pytest.mark.parametrize("command", HELP)
def test_help_commands_of_the_docs_run(command):
    argv = shlex.split(command)
    assert argv[0] == "python"
    result = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # absl's --help exits 1
    assert "Traceback" not in result.stderr
    assert re.search(r"--\w+", result.stdout), result.stdout[-2000:]


def test_the_readme_main_job_runs_for_one_epoch(tmp_path):
    """``python -m fas_tf.train`` as the README gives it, with ``--epochs=1`` (what CI runs): a
    new user's cache (the demo set is generated) and the default student and teacher."""
    out = tmp_path / "run"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "fas_tf.train", "--epochs=1", f"--output_dir={out}",
         "--verbose=0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["student"] == "dlib_transfer"
    assert (record["teacher"]["name"], record["teacher"]["pretrained"]) == ("dlib", True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["val"]["n"] == 24
    assert (out / "student.keras").is_file()

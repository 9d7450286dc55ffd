"""benchmarks/ablation: report generation from fake finished runs (no training)."""

import csv
import json
from pathlib import Path

import pytest

from benchmarks.ablation import arms, cli


def _fake_run(run_dir: Path, n: int, nme: float, teacher: dict | None) -> None:
    run_dir.mkdir(parents=True)
    per_face = [nme * f for f in (0.5, 0.8, 1.0, 1.2, 1.5)]
    val = {"nme": nme, "fr_10": sum(v > 0.1 for v in per_face) / 5, "auc_10": 0.3, "n": 5}
    (run_dir / "metrics.json").write_text(json.dumps(
        {"epochs": 3, "fit_seconds_this_process": 12.0, "val": val}))
    (run_dir / "config.json").write_text(json.dumps(
        {"num_train": n, "num_val": 5, "teacher": teacher}))
    (run_dir / "eval.json").write_text(json.dumps({**val, "per_face": per_face}))
    (run_dir / "run.json").write_text(json.dumps(
        {"epoch_seconds": 2.0, "fit_seconds": 12.0, "wall_seconds": 20.0}))


def test_report_from_fake_runs(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    dlib = {"name": "dlib", "pretrained": True}
    for arm, teacher, base in (("none", None, 0.12), ("dlib_all", dlib, 0.10)):
        for n in (20, 159):
            for seed in (0, 1):
                key = arms.RunKey(arm, n, seed)
                _fake_run(out / "e3" / key.rel_dir(), n, base * (20 / n) ** 0.1 + 0.01 * seed,
                          teacher)
    cv_key = arms.RunKey("none", None, 0, "ads")
    _fake_run(out / "e3" / cv_key.rel_dir(), 106, 0.09, None)

    code = cli.main(["--report_only", f"--out={out}", f"--docs={docs}", "--epochs=3",
                    "--configs=none,dlib_all,transfer", "--sizes=20,159", "--seeds=0,1"])
    assert code == 0
    md = (docs / "results.md").read_text()
    assert "8 of the 12 runs of the requested grid are finished" in md
    assert "| `none` |" in md and "±" in md and "test batch" in md
    assert f"Estimated full grid, schedule e{arms.EPOCHS}" in md
    assert "Estimated full grid, schedule e3" in md
    with open(docs / "ablation_summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [(r["config"], r["n"], r["seeds"]) for r in summary] == [
        ("none", "20", "2"), ("none", "159", "2"), ("dlib_all", "20", "2"),
        ("dlib_all", "159", "2")]
    assert abs(float(summary[0]["nme_mean"]) - 0.125) < 1e-6
    with open(docs / "ablation_runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 9
    for name in ("ablation_nme_vs_n.png", "ablation_ced_n159.png"):
        assert (docs / name).stat().st_size > 1000


def test_schedule_helpers():
    assert arms.epochs_for(20, 60, 0) == 60
    assert arms.epochs_for(20, 60, 600) == 300  # 2 steps per epoch
    assert arms.epochs_for(159, 60, 600) == 60
    assert arms.RunKey("cls", 40, 2).rel_dir() == Path("grid/cls/n40/seed2")
    fold = arms.RunKey("none", None, 0, "google2")
    assert fold.train_sets == ("ads", "youtube2") and fold.val_sets == ("google2",)


def test_student_spec_is_parsed_or_refused():
    from fas_tf.student import parse_student_spec

    assert parse_student_spec("0.5:96:64") == {"alpha": 0.5, "input_size": 96, "head_channels": 64}
    assert cli.parse_args(["--student=0.35:128:32"]).student["head_channels"] == 32
    for bad in ("0.5:96", "a:96:64"):
        with pytest.raises(SystemExit):
            cli.parse_args([f"--student={bad}"])


def test_arms_follow_the_training_defaults_and_choose_the_student_by_config():
    from fas_tf.train import DEFAULT_EPOCHS, TrainConfig

    assert arms.EPOCHS == DEFAULT_EPOCHS and arms.BATCH_SIZE == TrainConfig().batch_size
    assert arms.ARMS["transfer"].student == "dlib_transfer" and arms.ARMS["transfer"].transfer
    assert {a.student for n, a in arms.ARMS.items() if n != "transfer"} == {"mobilenetv2"}

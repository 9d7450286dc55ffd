"""benchmarks/ablation: rows that persist, skip before training, migration, bootstrap and the
report built from rows only (training faked, except one tiny real run)."""

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.ablation import arms, cli, collect, report, runner, stats

OLD_ROWS = """\
kind,config,n,fold,seed,epochs,student,num_train,num_val,teacher,teacher_pretrained,nme,fr_10,auc_10,fit_seconds,epoch_seconds,wall_seconds
grid,dlib_all,159,,0,200,0.5/96/64,159,51,dlib,True,0.0932019,0.333333,0.207,1836.33,,
grid,dlib_all,40,,0,200,0.5/96/64,40,51,dlib,True,0.174487,0.647059,0.066549,896.352,4.02576,904.29
grid,none,159,,0,200,0.5/96/64,159,51,none,,0.108452,0.392157,0.189814,1702.79,,
grid,none,40,,0,200,0.5/96/64,40,51,none,,0.191574,0.666667,0.0657941,844.663,3.74842,852.832
"""
STEMS = [f"google2_{i:02d}" for i in range(8)]


def _data(tmp_path: Path) -> Path:
    """A data folder with only attributes.csv (enough for the CLI's checks)."""
    data = tmp_path / "data"
    data.mkdir()
    lines = ["stem,image_set,subset,turned,occluded,expressive,tilted"]
    lines += [f"ads_{i},ads,t,0,0,0,0" for i in range(104)]
    lines += [f"yt_{i},youtube2,t,0,0,0,0" for i in range(55)]
    lines += [f"{s},google2,t,{i % 2},0,0,0" for i, s in enumerate(STEMS)]
    (data / "attributes.csv").write_text("\n".join(lines) + "\n")
    return data


def _fake_train(calls: list, fail: set | None = None):
    """A stand-in for runner.train_and_evaluate: NME 0.10 for none, 0.09 with a teacher; the
    runs in ``fail`` raise once."""

    def fake(key, run_dir, setting, log):
        calls.append((key.arm, key.n, key.seed, key.lam))
        if fail and (key.arm, key.n, key.seed) in fail:
            fail.discard((key.arm, key.n, key.seed))  # fails once
            raise RuntimeError("killed")
        base = 0.10 if key.arm == "none" else 0.09
        per_face = [base + 0.01 * (i % 3) for i in range(len(STEMS))]
        teacher = None if key.arm == "none" else {
            "name": "facenet", "pretrained": True, "sha256": "ab" * 32}
        return {
            "record": {"teacher": teacher, "num_train": key.n,
                       "regularizers_active": [] if key.arm == "none" else ["cls", "feat"]},
            "epochs": arms.epochs_for(key.n or 106, setting.steps),  # a fold: 106 faces
            "eval": {"nme": float(np.mean(per_face)), "fr_10": 0.25, "auc_10": 0.3,
                     "n": len(STEMS), "per_face": per_face, "images": STEMS,
                     "subsets": {"turned": {"nme": base + 0.005}}},
            "seconds": 12.5, "resumed": False,
        }

    return fake


def test_each_finished_run_appends_one_row_and_is_never_run_again(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(runner, "train_and_evaluate", _fake_train(calls, {("none", 40, 0)}))
    docs, data = tmp_path / "docs", _data(tmp_path)
    common = [f"--docs={docs}", f"--out={tmp_path / 'out'}", f"--data={data}", "--steps=31",
              "--configs=none,facenet_all", "--sizes=20,40", "--in_process"]  # the fake: here
    assert cli.main([*common, "--seeds=0"]) == 1  # one run failed: no row for it
    assert len(calls) == 4
    rows = collect.read_rows(docs / "ablation" / "rows.csv")
    assert len(rows) == 3 and ("none", "40", "0") not in [(r["config"], r["n"], r["seed"])
                                                         for r in rows]
    r = next(r for r in rows if r["config"] == "facenet_all" and r["n"] == "20")
    # 31 steps at 20 faces (2 steps per epoch) -> 16 epochs = 32 steps; at 40 (3) -> 11 = 33
    assert (r["schedule"], r["epochs"], r["steps"], r["lambda"]) == ("s31", "16", "32", "1")
    assert r["teacher_sha256"] == "ab" * 32 and r["nme_turned"] == "0.095"
    assert r["command"] == ("python benchmarks/ablation --configs=facenet_all --sizes=20 "
                            f"--seeds=0 --steps=31 --student=0.5:96:64 --lambdas=1 --data={data}")
    assert next(x for x in rows if x["n"] == "40")["steps"] == "33"
    faces = collect.read_per_face(docs / "ablation" / r["per_face"])
    assert list(faces) == STEMS and faces[STEMS[2]] == pytest.approx(0.11)
    assert "none" in {x["config"] for x in rows} and next(
        x for x in rows if x["config"] == "none")["lambda"] == ""

    calls.clear()  # same grid again: only the failed run is retried
    assert cli.main([*common, "--seeds=0"]) == 0
    assert calls == [("none", 40, 0, None)]
    calls.clear()  # a new seed and a new weight run; nothing finished runs again
    assert cli.main([*common, "--seeds=0,1", "--lambdas=1,0.1"]) == 0
    assert sorted(calls) == sorted(
        [("none", 20, 1, None), ("none", 40, 1, None)]
        + [("facenet_all", n, s, 0.1) for n in (20, 40) for s in (0, 1)]
        + [("facenet_all", n, 1, 1.0) for n in (20, 40)])
    rows = collect.read_rows(docs / "ablation" / "rows.csv")
    assert len(rows) == 12 and len({collect.row_key(r) for r in rows}) == 12
    assert len(list((docs / "ablation" / "per_face").glob("*.csv"))) == 12
    calls.clear()  # another schedule is another run
    assert cli.main([*common, "--seeds=0", "--configs=none", "--sizes=20", "--steps=40"]) == 0
    assert calls == [("none", 20, 0, None)]


def test_the_cv_fold_of_the_grids_own_split_is_its_n159_run(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(runner, "train_and_evaluate", _fake_train(calls))
    docs, data = tmp_path / "docs", _data(tmp_path)
    common = [f"--docs={docs}", f"--out={tmp_path / 'out'}", f"--data={data}", "--steps=31",
              "--in_process"]
    fold = arms.RunKey("facenet_all", None, 0, "google2", 1.0)
    assert arms.grid_twin(fold) == arms.RunKey("facenet_all", 159, 0, "", 1.0)
    assert arms.grid_twin(arms.RunKey("none", None, 0, "ads")) is None
    assert cli.main([*common, "--configs=none,facenet_all", "--sizes=159", "--seeds=0"]) == 0
    calls.clear()  # holding out google2 = the N=159 runs above: only the ads fold trains
    assert cli.main([*common, "--cv=none,facenet_all", "--cv_folds=google2,ads"]) == 0
    assert calls == [("none", None, 0, None), ("facenet_all", None, 0, 1.0)]
    md = (docs / "results.md").read_text()
    assert "| `none` | s31 | 0.5:96:64 | google2 * | 1 | 10.88 |" in md
    assert "| `facenet_all λ=1` | s31 | 0.5:96:64 | ads | 1 × 8 | -1.00 (-1.00 to -1.00)" in md
    # both held-out batches, each face once: 1 seed x (8 + 8) faces
    assert "| `facenet_all λ=1` | s31 | 0.5:96:64 | ads+google2 * | 1 × 16 | -1.00 " in md


def _on_two_machines(monkeypatch, calls: list, folders: list | None = None) -> dict:
    """Fake training on "machine A" or "machine B" (``here["name"]`` of the returned dict),
    whose kernels drift: B adds a point of NME to every face. ``folders`` gets each run folder."""
    fake = _fake_train(calls)
    here = {"name": "machine A"}

    def train(key, run_dir, setting, log):
        if folders is not None:
            folders.append(run_dir.name)
        result = fake(key, run_dir, setting, log)
        if here["name"] == "machine B":
            ev = result["eval"]
            ev["per_face"] = [v + 0.01 for v in ev["per_face"]]
            ev["nme"] = float(np.mean(ev["per_face"]))
        return result

    monkeypatch.setattr(runner, "train_and_evaluate", train)
    monkeypatch.setattr(runner, "machine", lambda: here["name"])
    monkeypatch.setattr(cli, "machine", lambda: here["name"])
    return here


def test_a_cv_pair_of_two_machines_takes_a_rerun_of_one_machine(tmp_path, monkeypatch):
    calls: list = []
    here = _on_two_machines(monkeypatch, calls)
    docs, data = tmp_path / "docs", _data(tmp_path)
    common = [f"--docs={docs}", f"--out={tmp_path / 'out'}", f"--data={data}", "--steps=31",
              "--in_process", "--cv_folds=ads"]

    def cv_line() -> str:
        md = (docs / "results.md").read_text()
        return next(line for line in md.splitlines()
                    if line.startswith("| `facenet_all λ=1` | s31 | 0.5:96:64 | ads | 1 × 8 |"))

    assert cli.main([*common, "--cv=none"]) == 0
    here["name"] = "machine B"
    assert cli.main([*common, "--cv=facenet_all"]) == 0
    # teacher -1 point, machine B +1 point: the rows of two machines show no difference
    assert cv_line().endswith(
        "| 1 × 8 | +0.00 (+0.00 to +0.00), no difference shown, faces only [1] † |")
    assert cli.main([*common, "--cv=none", "--rerun"]) == 0  # none again, on machine B
    assert calls[-1] == ("none", None, 0, None)
    assert cv_line().endswith("| 1 × 8 | -1.00 (-1.00 to -1.00), lower, faces only [1] |")


def test_rerun_runs_rows_again_into_reruns_csv_once_per_machine(tmp_path, monkeypatch):
    calls: list = []
    folders: list = []
    here = _on_two_machines(monkeypatch, calls, folders)
    docs, data = tmp_path / "docs", _data(tmp_path)
    common = [f"--docs={docs}", f"--out={tmp_path / 'out'}", f"--data={data}", "--steps=31",
              "--configs=none", "--seeds=0", "--in_process"]
    assert cli.main([*common, "--sizes=20"]) == 0
    rows_csv = docs / "ablation" / "rows.csv"
    before = rows_csv.read_bytes()
    calls.clear()
    assert cli.main([*common, "--sizes=20,40", "--rerun"]) == 0  # N=40 has no row to rerun
    assert calls == [("none", 20, 0, None)] and rows_csv.read_bytes() == before
    assert folders[-1] != folders[0]  # a rerun never resumes its row's run folder
    reruns = collect.read_rows(docs / "ablation" / "reruns.csv")
    assert len(reruns) == 1 and reruns[0]["machine"] == "machine A"
    assert reruns[0]["command"].endswith("--rerun")
    assert reruns[0]["per_face"] == ("per_face/reruns/none_n20_seed0_s31_0.5-96-64."
                                     f"{collect.machine_tag('machine A')}.csv")
    calls.clear()
    assert cli.main([*common, "--sizes=20", "--rerun"]) == 0  # done on this machine
    assert calls == []
    here["name"] = "machine B"
    assert cli.main([*common, "--sizes=20", "--rerun"]) == 0
    assert calls == [("none", 20, 0, None)]
    assert len(collect.read_rows(docs / "ablation" / "reruns.csv")) == 2
    md = (docs / "results.md").read_text()
    assert ("| none_n20_seed0_s31_0.5-96-64 | machine A | machine A | 10.88 | 10.88 | +0.00 "
            "| 8/8 |") in md
    assert ("| none_n20_seed0_s31_0.5-96-64 | machine A | machine B | 10.88 | 11.88 | +1.00 "
            "| 0/8 |") in md
    assert ("- 1 of 2 reruns give their row's error on every face; 1 of the 1 on the row's own "
            "machine do.") in md
    assert ("- The other 1 do not (1 distinct): rerun − row +1.00 points on average, from "
            "+1.00 to +1.00") in md
    assert "not around 0" in report._drift_bias([-1.64, -1.08, -1.47])  # one way: biased
    assert "centred on 0" in report._drift_bias([-1.5, 1.4, 0.2, -0.3])
    assert report._drift_bias([-1.0, -1.2]) == ""  # too few to tell


def test_rows_csv_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "rows.csv"
    first = {"config": "none", "n": 20, "seed": 0, "schedule": "s30", "nme": 0.1234567891}
    collect.append_row(path, first)
    before = path.read_bytes()
    assert b",0.123457," in before  # 6 significant digits

    def killed(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(collect.os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        collect.append_row(path, {**first, "seed": 1})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["rows.csv"]
    monkeypatch.undo()
    collect.append_row(path, {**first, "seed": 1, "nme": 0.2})
    collect.append_row(path, {**first, "seed": 1, "nme": 0.3})  # same key: replaced
    rows = collect.read_rows(path)
    assert [(r["seed"], r["nme"]) for r in rows] == [("0", "0.123457"), ("1", "0.3")]
    assert path.read_bytes().startswith(before)  # earlier rows kept byte for byte


def test_old_rows_are_migrated_with_what_is_missing_marked(tmp_path):
    old = tmp_path / "ablation_runs.csv"
    old.write_text(OLD_ROWS)
    rows = collect.migrate_old_rows(old)
    got = {(r["config"], r["n"]): r for r in rows}
    assert len(rows) == 4
    d40 = got[("dlib_all", "40")]
    assert (d40["schedule"], d40["epochs"], d40["steps"], d40["lambda"]) == ("e200", 200, 600, "1")
    assert (d40["student"], d40["seconds"], d40["teacher_sha256"], d40["command"]) == (
        "0.5:96:64", "904.29", "", "")
    assert "no teacher sha256" in d40["note"] and "per-face" in d40["note"]
    assert got[("none", "159")]["steps"] == 2000 and got[("none", "159")]["lambda"] == ""
    assert got[("none", "159")]["seconds"] == "1702.79"  # no wall time: the fit time
    docs = tmp_path / "docs"
    for _ in range(2):  # idempotent
        assert cli.main(["--report_only", f"--docs={docs}", f"--migrate_from={old}"]) == 0
    stored = collect.read_rows(docs / "ablation" / "rows.csv")
    assert len(stored) == 4 and {r["nme"] for r in stored} == {
        "0.0932019", "0.174487", "0.108452", "0.191574"}
    md = (docs / "results.md").read_text()
    assert "| `none` | 19.16 (1) | 10.85 (1) |" in md
    assert "| `dlib_all λ=1` | 17.45 (1) | 9.32 (1) |" in md
    assert "Schedule `e200` (200 epochs)" in md and "no interval can be given" in md


def _write_rows(docs: Path, shift: float, seeds: int, n_faces: int = 30,
                replay: float | None = None, sweep: dict[str, float] | None = None,
                machines: dict[tuple[str, int], str] | None = None,
                transfer: float | None = None) -> None:
    """rows.csv + per-face files: facenet_all = none + shift; facenet_random = none + noise;
    with ``replay``, a facenet_all lambda 0 arm = none + replay; ``sweep``: facenet_all at
    further lambdas (text) = none + their shift; ``machines``: (config, seed) -> the machine
    of those rows (else one machine for all); with ``transfer``, transfer = none + it."""
    rng = np.random.default_rng(1)
    rows_dir = docs / "ablation"
    rows = []
    for n in (20, 40):
        for seed in range(seeds):
            base = 0.12 + 0.03 * rng.random(n_faces)
            noise = rng.normal(0, 0.01, n_faces)
            arms = [("none", "", base), ("facenet_all", "1", base + shift),
                    ("facenet_random", "1", base + shift + noise - noise.mean())]
            if replay is not None:
                arms.append(("facenet_all", "0", base + replay))
            arms += [("facenet_all", lam, base + d) for lam, d in (sweep or {}).items()]
            if transfer is not None:
                arms.append(("transfer", "", base + transfer))
            for arm, lam, vals in arms:
                key = (arm, lam, str(n), str(seed), "s100", "", "0.5:96:64")
                name = f"per_face/{collect.run_name(key)}.csv"
                collect.write_per_face(rows_dir / name, [f"f{i}" for i in range(n_faces)],
                                       list(vals))
                rows.append({**dict(zip(collect.KEY_COLUMNS, key, strict=True)),
                             "nme": float(np.mean(vals)), "fr_10": 0.5, "auc_10": 0.1,
                             "steps": 100, "seconds": 50.0, "per_face": name,
                             "date": "2026-11-30T01:00:00+00:00", "commit": "c0ffee",
                             "machine": (machines or {}).get(
                                 (arm, seed), "AMD EPYC (flags: avx2), tensorflow 2.21.0")})
    collect.write_rows(rows_dir / "rows.csv", rows)


def test_report_is_built_from_rows_and_per_face_files_only(tmp_path):
    docs = tmp_path / "docs"
    _write_rows(docs, shift=-0.02, seeds=3)
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    assert not (tmp_path / "nothing").exists()
    md = (docs / "results.md").read_text()
    assert "| 20 | `facenet_all λ=1` − `none` | 3 | 30 | -2.00 |" in md
    assert ("N=40: `facenet_all λ=1` − `none` = -2.00 points NME" in md
            and "the interval excludes 0, `facenet_all λ=1` has the lower NME" in md)
    # the random control equals the real teacher up to centred noise: no difference shown
    assert ("N=20: `facenet_all λ=1` − `facenet_random λ=1` = +0.00 points NME" in md
            and "contains 0, so no difference between `facenet_all λ=1` and "
            "`facenet_random λ=1` is shown" in md)
    assert "| 2026-11-30 | c0ffee | AMD EPYC (flags: avx2), tensorflow 2.21.0 | 18 |" in md
    with open(docs / "ablation" / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    none20 = next(s for s in summary if s["config"] == "none" and s["n"] == "20")
    assert none20["seeds"] == "3" and float(none20["nme_lo"]) < float(none20["nme_mean"]) < \
        float(none20["nme_hi"])
    assert (docs / "ablation" / "nme_vs_n_s100_0.5-96-64.png").stat().st_size > 5000


def test_report_compares_weighted_arms_with_the_replay_control(tmp_path):
    # lambda 0: the teacher arm's replayed views without its terms; the teacher's own effect is
    # the weighted arm minus that control (-2.0 - 0.5 = -2.5 points), not minus none (-2.0)
    docs = tmp_path / "docs"
    _write_rows(docs, shift=-0.02, seeds=2, replay=0.005)
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    md = (docs / "results.md").read_text()
    assert "| 20 | `facenet_all λ=1` − `facenet_all λ=0` | 2 | 30 | -2.50 |" in md
    assert "| 40 | `facenet_all λ=0` − `none` | 2 | 30 | +0.50 |" in md
    assert "`facenet_random λ=1` − `facenet_all λ=0`" in md
    assert "`facenet_all λ=0` − `facenet_all λ=0`" not in md


def test_report_answers_the_questions_from_the_paired_differences(tmp_path):
    docs = tmp_path / "docs"
    _write_rows(docs, shift=-0.02, seeds=3, replay=0.005)
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    md = (docs / "results.md").read_text()
    answers = md.split("## The questions, answered so far")[1].split("## How a session")[0]
    row20 = next(line for line in answers.splitlines() if line.startswith("| 20 |"))
    # vs none -2.00 and vs the replay control -2.50 (both lower); vs the random control ~0
    cells = row20.split(" | ")
    assert cells[1].startswith("-2.00 (") and cells[1].endswith("lower [3]")
    assert "no difference shown [3]" in cells[2]
    assert cells[3].startswith("-2.50 (") and "lower [3]" in cells[3]
    assert "| 80 | " in answers and "no paired rows yet" in answers  # N=80 has no rows
    assert "| 40 | `facenet_cls λ=1` | no paired rows yet | no paired rows yet |" in answers
    # in short: what each column shows over the sizes, and which gains the intervals rule out
    assert ("- Against `none` (no teacher): lower NME shown at N=20, 40; not compared yet at "
            "N=80; averaged over N=20, 40: -2.00 (" in answers)
    assert ("- Against `facenet_random λ=1` (random weights): no difference shown at N=20, 40, "
            "and a gain larger than 0." in answers)
    assert "- `facenet_sa λ=1` against `none`: no paired rows yet." in answers
    assert "†" not in answers  # every row from one machine
    # averaged over the sizes that ran (20, 40), each weighted equally, 6 runs
    pooled = next(line for line in answers.splitlines()
                  if line.startswith("| ≤ 80, mean over N |")).split(" | ")
    assert pooled[1].startswith("-2.00 (") and pooled[1].endswith("lower [6] (N=20, 40)")


def test_report_compares_the_teacher_with_standard_transfer_learning(tmp_path):
    docs = tmp_path / "docs"
    _write_rows(docs, shift=-0.02, seeds=3)
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    assert "Does it beat standard transfer learning?" not in (docs / "results.md").read_text()
    _write_rows(docs, shift=-0.02, seeds=3, transfer=-0.03)
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    section = (docs / "results.md").read_text().split(
        "Does it beat standard transfer learning?")[1].split("**Which of the four")[0]
    cells = next(line for line in section.splitlines() if line.startswith("| 40 |")).split(" | ")
    assert cells[1].startswith("-3.00 (") and cells[1].endswith("lower [3]")  # transfer − none
    assert cells[2].startswith("+1.00 (") and "higher [3]" in cells[2]  # facenet_all − transfer
    assert "- `facenet_all λ=1` against `transfer`: higher NME shown at N=20, 40;" in section


def test_report_marks_differences_between_rows_of_different_machines(tmp_path):
    docs = tmp_path / "docs"
    _write_rows(docs, shift=-0.02, seeds=3, replay=0.005,
                machines={("facenet_random", 1): "Intel Xeon, 2 CPUs (flags: avx2 avx512f)"})
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    answers = (docs / "results.md").read_text().split("## How a session")[0]
    cells = next(line for line in answers.splitlines() if line.startswith("| 20 |")).split(" | ")
    assert not cells[1].endswith("†") and cells[2].endswith("[3] †")  # only vs the control
    assert not cells[3].rstrip(" |").endswith("†")
    assert "† For at least one seed the two rows were trained on different machines" in answers
    # a rerun of facenet_all on the control's machine (seed 1) takes its row's place in that
    # pair: no † left, and the pair uses the rerun's errors (1 point higher there)
    rows_dir = docs / "ablation"
    row = next(r for r in collect.read_rows(rows_dir / "rows.csv")
               if (r["config"], r["lambda"], r["n"], r["seed"]) == ("facenet_all", "1", "20", "1"))
    faces = collect.read_per_face(rows_dir / row["per_face"])
    rerun = {**row, "machine": "Intel Xeon, 2 CPUs (flags: avx2 avx512f)",
             "per_face": "per_face/reruns/facenet_all_n20.csv"}
    collect.write_per_face(rows_dir / rerun["per_face"], list(faces),
                           [v + 0.01 for v in faces.values()])
    collect.write_rows(rows_dir / "reruns.csv", [rerun])
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    answers = (docs / "results.md").read_text().split("## How a session")[0]
    after = next(line for line in answers.splitlines() if line.startswith("| 20 |")).split(" | ")
    assert after[1] == cells[1]  # vs none: rows of one machine, the rerun not used
    assert "†" not in after[2] and float(after[2].split(" ")[0]) == pytest.approx(
        float(cells[2].split(" ")[0]) + 1 / 3, abs=0.011)


def test_report_answers_which_weight_when_a_teacher_arm_ran_at_several(tmp_path):
    docs = tmp_path / "docs"
    _write_rows(docs, shift=-0.02, seeds=3, replay=0.005)
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    assert "Which weight λ?" not in (docs / "results.md").read_text()  # one weight: no sweep
    _write_rows(docs, shift=-0.02, seeds=3, replay=0.005, sweep={"0.1": 0.01, "0.3": 0.0})
    assert cli.main(["--report_only", f"--docs={docs}", f"--out={tmp_path / 'nothing'}"]) == 0
    answers = (docs / "results.md").read_text().split("## The questions, answered so far")[1]
    sweep = answers.split("**Which weight λ?** `facenet_all`")[1].split("## How a session")[0]
    rows = [line.split(" | ") for line in sweep.splitlines() if line.startswith("| 40 |")]
    assert [r[1] for r in rows] == ["0.1", "0.3", "1"]  # every weight that ran, in order
    # minus none: +1.00 higher, exactly 0, -2.00 lower; minus the lambda-0 replay arm: 0.5 less
    assert rows[0][2].startswith("+1.00 (") and rows[0][2].endswith("higher [3]")
    assert rows[1][2].startswith("+0.00 (") and "no difference shown" in rows[1][2]
    assert rows[2][2].startswith("-2.00 (") and rows[2][2].endswith("lower [3]")
    assert rows[0][3].startswith("+0.50 (") and rows[2][3].startswith("-2.50 (")
    assert "- `facenet_all λ=0.1` against `none`: higher NME shown at N=20, 40." in sweep
    assert "- `facenet_all λ=1` against `none`: lower NME shown at N=20, 40." in sweep


def test_in_short_names_what_each_size_shows_and_the_gain_ruled_out():
    iv = stats.Interval
    text = report._in_short("Against `none`", {
        20: iv(-0.005, -0.031, 0.012, 3, 51),  # contains 0: a gain above 3.10 points ruled out
        40: iv(-0.02, -0.03, -0.01, 2, 51),  # lower, on 2 seeds
        80: iv(0.02, 0.01, 0.03, 3, 51),  # higher
        159: None})
    assert text == ("Against `none`: lower NME shown at N=40; higher NME shown at N=80; no "
                    "difference shown at N=20, and a gain larger than 3.10 points (N=20) is "
                    "ruled out; fewer than 3 seeds at N=40; not compared yet at N=159.")
    assert report._in_short("x", {20: None}) == "x: no paired rows yet."


def test_bootstrap_finds_a_known_shift_and_no_shift_in_noise():
    rng = np.random.default_rng(0)
    shifted = -0.02 + rng.normal(0, 0.01, (3, 51))
    iv = stats.bootstrap(shifted)
    assert iv.lo < -0.02 < iv.hi and iv.hi < 0 and iv.excludes_zero
    assert iv.hi - iv.lo < 0.01 and (iv.seeds, iv.faces) == (3, 51)
    constant = stats.bootstrap(np.full((2, 20), 0.005))
    assert constant.lo == pytest.approx(0.005) and constant.hi == pytest.approx(0.005)
    noise = rng.normal(0, 0.01, (3, 51))
    iv0 = stats.bootstrap(noise - noise.mean())
    assert iv0.lo < 0 < iv0.hi and not iv0.excludes_zero
    # a shift that differs between seeds: resampling seeds widens the interval
    seedy = np.array([[-0.03], [0.0], [0.03]]) + rng.normal(0, 0.001, (3, 51))
    assert stats.bootstrap(seedy).hi - stats.bootstrap(seedy).lo > 0.02
    assert stats.bootstrap(seedy[:1]).seeds == 1
    assert stats.bootstrap(shifted) == iv  # seeded


def test_paired_matrix_pairs_seeds_and_faces():
    a = {0: {"x": 0.2, "y": 0.3}, 1: {"x": 0.1, "y": 0.2}, 2: {"x": 0.5}}
    b = {0: {"x": 0.1, "y": 0.1, "z": 9.0}, 1: {"x": 0.1, "y": 0.1}}
    m, seeds, stems = stats.paired_matrix(a, b)
    assert seeds == [0, 1] and stems == ["x", "y"]
    np.testing.assert_allclose(m, [[0.1, 0.2], [0.0, 0.1]])
    assert stats.paired_matrix(a, {5: {"x": 1.0}})[0].size == 0


def test_schedule_keys_and_arms():
    assert arms.epochs_for(20, 2000) == 1000  # 2 steps per epoch
    assert arms.epochs_for(40, 2000) == 667
    assert arms.epochs_for(159, 2000) == 200
    # a checkpoint about every 200 steps: N=20 every 100 epochs (2 steps each), N=159 every 20
    assert [arms.checkpoint_every(n) for n in (20, 80, 159, 2000)] == [100, 40, 20, 1]
    keys = arms.grid_keys(["none", "facenet_all"], [20], [0], [0.1, 1.0])
    assert [(k.arm, k.lam) for k in keys] == [("none", None), ("facenet_all", 0.1),
                                             ("facenet_all", 1.0)]
    fold = arms.RunKey("none", None, 0, "google2")
    assert fold.train_sets == ("ads", "youtube2") and fold.val_sets == ("google2",)
    key = collect.run_key(arms.RunKey("facenet_all", 40, 2, "", 0.1), "s2000", "0.5:96:64")
    assert collect.run_name(key) == "facenet_all_l0.1_n40_seed2_s2000_0.5-96-64"
    cv = arms.RunKey("dlib_all", None, 1, "ads", 0.3)
    assert collect.run_key(cv, "s2000", "0.5:96:64") == (
        "dlib_all", "0.3", "", "1", "s2000", "ads", "0.5:96:64")
    setting = runner.Setting(steps=2000, student="0.5:96:64", teacher_cache=3)
    assert runner.command_for(cv, setting) == (
        "python benchmarks/ablation --cv=dlib_all --cv_seeds=1 --cv_folds=ads --steps=2000 "
        "--student=0.5:96:64 --lambdas=0.3 --teacher_cache=3")
    again = cli.parse_args(runner.command_for(cv, setting).split()[2:])
    assert (again.configs, again.cv, again.cv_seeds, again.cv_folds, again.lambdas) == (
        [], ["dlib_all"], [1], ["ads"], [0.3])
    assert arms.ARMS["facenet_random"].teacher_weights == "random"
    assert arms.ARMS["facenet_all"].teacher_weights is None
    assert arms.grid_configs("dlib")[5:9] == ["dlib_cls", "dlib_feat", "dlib_sa", "dlib_ca"]
    assert set(arms.grid_configs()) >= {"none", "facenet_all", "facenet_random", "dlib_all",
                                        "facenet_ca", "transfer"}


def test_cli_arguments():
    from fas_tf.training.config import TrainConfig

    assert arms.BATCH_SIZE == TrainConfig().batch_size
    args = cli.parse_args(["--lambdas=0.03,0.1,0.3,1", "--single_teacher=dlib"])
    assert args.lambdas == [0.03, 0.1, 0.3, 1.0] and "dlib_sa" in args.configs
    assert cli.parse_args(["--cv=none"]).configs == []  # --cv alone: only the CV runs
    assert cli.parse_args(["--student=0.35:128:32"]).student == "0.35:128:32"
    for bad in ("--student=0.5:96", "--lambdas=a", "--lambdas=-1", "--configs=nope",
                "--steps=0", "--teacher_cache=-1", "--teacher_cache=some",
                "--cv=none --cv_folds=x"):
        with pytest.raises(SystemExit):
            cli.parse_args(bad.split())


def test_teacher_cache_views_auto_replays_each_view_at_most_four_times():
    assert runner.cache_views(0, 1000) == 0 and runner.cache_views(16, 1000) == 16
    assert runner.cache_views("auto", 200) == 50 and runner.cache_views("auto", 1000) == 250
    assert runner.cache_views("auto", 201) == 51
    assert cli.parse_args(["--teacher_cache=auto"]).teacher_cache == "auto"
    assert cli.parse_args(["--teacher_cache=64"]).teacher_cache == 64
    setting = runner.Setting(steps=2000, student="0.5:96:64", teacher_cache="auto")
    key = arms.RunKey("facenet_all", 20, 0, "", 1.0)
    assert runner.command_for(key, setting).endswith("--lambdas=1 --teacher_cache=auto")


def test_a_real_tiny_run_lands_as_a_row_from_its_own_process(tmp_path, demo_faces):
    """One real training + evaluation (no teacher, 6 faces, 32 px, 2 steps) through run_one in
    a spawned process (the CLI's default); a run that fails there raises here."""
    stems = sorted(p.stem for p in demo_faces.glob("*.jpg"))
    sets = ["ads"] * 6 + ["google2"] * (len(stems) - 6)
    (tmp_path / "attributes.csv").write_text("stem,image_set,turned\n" + "".join(
        f"{s},{b},{i % 2}\n" for i, (s, b) in enumerate(zip(stems, sets, strict=True))))
    setting = runner.Setting(steps=2, student="0.35:32:8", data=demo_faces,
                             attributes=tmp_path / "attributes.csv", out=tmp_path / "out",
                             rows_dir=tmp_path / "rows", verbose=0)
    row = runner.run_in_child(arms.RunKey("none", 6, 0), setting)
    stored = collect.read_rows(tmp_path / "rows" / "rows.csv")
    assert len(stored) == 1 and collect.row_key(stored[0]) == (
        "none", "", "6", "0", "s2", "", "0.35:32:8")
    assert (row["epochs"], row["steps"], row["num_val"]) == (2, 2, len(stems) - 6)
    faces = collect.read_per_face(tmp_path / "rows" / row["per_face"])
    assert sorted(faces) == stems[6:]
    assert np.mean(list(faces.values())) == pytest.approx(row["nme"], rel=1e-4)
    assert row["nme_turned"] is not None and row["teacher"] == "none"
    assert "(flags: " in row["machine"] and ", tensorflow 2." in row["machine"]
    assert row["command"].endswith(f"--attributes={tmp_path / 'attributes.csv'}")
    # the run's recipe, in the format of recipes/: the arm's settings exactly
    from fas_tf.training.config import TrainConfig, read_recipe

    (folder,) = (tmp_path / "out").iterdir()
    recipe = read_recipe(folder / "recipe.yaml", TrainConfig)
    expected = runner.arm_config(arms.RunKey("none", 6, 0), folder, setting)
    assert TrainConfig(**recipe) == dataclasses.replace(expected, resume=False, verbose=1,
                                                        allow_download=True)
    assert (recipe["teacher"], recipe["train_limit"], recipe["epochs"]) == ("none", 6, 2)
    assert row["command"] in (folder / "recipe.yaml").read_text().splitlines()[0]
    missing = dataclasses.replace(setting, data=tmp_path / "no_faces")
    with pytest.raises(Exception, match="no_faces"):
        runner.run_in_child(arms.RunKey("none", 6, 1), missing)
    assert len(collect.read_rows(tmp_path / "rows" / "rows.csv")) == 1


KILLED_RUNNER = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from benchmarks.ablation.runner import child_pool
if __name__ == "__main__":
    with child_pool() as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 120).result()
"""


def test_a_killed_runner_leaves_no_run_behind(tmp_path):
    """SIGKILL of the runner ends its training process too (else it would train on alone)."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "runner.py"
    script.write_text(KILLED_RUNNER)
    repo = str(Path(__file__).resolve().parents[1])
    runner_process = subprocess.Popen([sys.executable, str(script), repo],
                                      stdout=subprocess.PIPE, text=True)
    worker = int(runner_process.stdout.readline())
    assert worker != runner_process.pid and Path(f"/proc/{worker}").exists()
    runner_process.send_signal(signal.SIGKILL)
    runner_process.wait()
    def alive() -> bool:  # neither gone nor a zombie
        try:
            return Path(f"/proc/{worker}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.time() + 30
    while alive() and time.time() < deadline:
        time.sleep(0.2)
    assert not alive()


def test_machine_names_the_cpu_and_the_kernel_settings(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    plain = runner.machine()
    assert " CPUs (flags: " in plain and ", tensorflow 2." in plain and "ONEDNN" not in plain
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert runner.machine() == plain + ", ONEDNN_MAX_CPU_ISA=AVX2"


def test_pooled_bootstrap_weighs_each_size_equally():
    rng = np.random.default_rng(3)
    faces = rng.normal(0, 0.02, 40)  # shared faces: one column each
    strata = [faces + rng.normal(0, 0.005, (3, 40)) + shift for shift in (-0.01, 0.0, 0.04)]
    strata[2] = np.vstack([strata[2], strata[2][:1] + 0.03])  # a 4th seed at one size
    iv = stats.bootstrap_strata(strata)
    assert iv.mean == pytest.approx(np.mean([m.mean() for m in strata]))
    assert abs(iv.mean - np.vstack(strata).mean()) > 0.001  # not the mean of all rows
    assert iv.seeds == 10 and iv.faces == 40 and iv.lo < iv.mean < iv.hi
    one, plain = stats.bootstrap_strata(strata[:1]), stats.bootstrap(strata[0])
    assert one.mean == pytest.approx(plain.mean)
    assert one.hi - one.lo == pytest.approx(plain.hi - plain.lo, rel=0.15)
    with pytest.raises(ValueError, match="same faces"):
        stats.bootstrap_strata([np.zeros((2, 5)), np.zeros((2, 6))])

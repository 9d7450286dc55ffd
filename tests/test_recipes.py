"""The recipes README names: ``python -m fas_tf.train --config=recipes/NAME.yaml`` runs each one
(on tiny data, with the tiny student and teacher), and its settings reach the run's config.json.
"""

import json
import re
import subprocess
import sys

import pytest

from fas_tf.errors import UsageError
from fas_tf.training.config import (
    DECODER_CHOICES,
    STUDENT_CHOICES,
    TEACHER_CHOICES,
    TrainConfig,
    read_recipe,
    recipe_text,
)

from .conftest import REPO, TINY_TRAIN, train_tiny

RECIPES = REPO / "recipes"
# What a test changes in a recipe: tiny data and an epoch, in the test's folder.
TINY = {"attributes": None, "train_sets": [], "val_sets": [], "epochs": 1, "input_size": 32,
        "batch_size": 4, "train_limit": 4, "verbose": 0}


def readme_recipes() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return list(dict.fromkeys(re.findall(r"\(recipes/([\w-]+)\.yaml\)", text)))


def test_the_readme_names_every_recipe_and_they_read():
    assert readme_recipes() == ["default", "research_distilled", "phone"]
    assert sorted(readme_recipes()) == sorted(p.stem for p in RECIPES.glob("*.yaml"))
    for name in readme_recipes():
        settings = read_recipe(RECIPES / f"{name}.yaml", TrainConfig)
        assert settings["output_dir"] == f"runs/{name}"
        assert settings["seed"] == 0 and settings["val_sets"] == ["google2"]
    default = TrainConfig(**read_recipe(RECIPES / "default.yaml", TrainConfig))
    assert (default.student, default.input_size, default.epochs) == ("dlib_transfer", 128, 200)


def test_flag_choices_are_the_registries():
    from fas_tf.heatmaps import DECODERS
    from fas_tf.student import STUDENTS
    from fas_tf.teachers import TEACHER_CHOICES as REGISTERED

    assert set(STUDENT_CHOICES) == set(STUDENTS)
    assert set(TEACHER_CHOICES) == set(REGISTERED)
    assert set(DECODER_CHOICES) == set(DECODERS)


def test_each_recipe_trains_and_its_settings_reach_the_run(tmp_path, demo_faces):
    """In the README's order; a recipe distilling from another's ``output_dir`` (or from the
    user's other seeds of it, ``runs/NAME_seedK``) gets that recipe's tiny run."""
    from fas_tf.inference import load_student
    from fas_tf.student import decoding_of

    outputs = {}
    for name in readme_recipes():
        recipe = read_recipe(RECIPES / f"{name}.yaml", TrainConfig)
        out = tmp_path / name
        changes = {**TINY, "data": str(demo_faces), "val_data": str(demo_faces),
                   "output_dir": str(out)}
        if recipe.get("distill_from"):
            runs = [re.sub(r"_seed\d+$", "", path.rsplit("/", 2)[-2])
                    for path in recipe["distill_from"]]
            changes["distill_from"] = [str(outputs[run] / "student.keras") for run in runs]
        config = TrainConfig(**{**recipe, **changes})
        train_tiny(config, teacher=recipe["teacher"] != "none")
        # the student is saved with the decoding its config names (default dark)
        assert decoding_of(load_student(out / "student.keras")) == (config.decoder, config.sigma)
        outputs[recipe["output_dir"].rsplit("/", 1)[-1]] = out
        saved = json.loads((out / "config.json").read_text())["config"]
        assert {k: saved[k] for k in recipe if k not in changes} == {
            k: v for k, v in recipe.items() if k not in changes}
        record = json.loads((out / "config.json").read_text())["distill"]
        assert len((record or {}).get("models", [])) == len(recipe.get("distill_from", []))
        # the run's config.json is a recipe of the same run
        again = read_recipe(out / "config.json", TrainConfig)
        assert TrainConfig(**again) == TrainConfig(**{**recipe, **changes, "verbose": 1})


def test_config_flag_with_overrides_from_the_command_line(tmp_path, demo_faces):
    out = tmp_path / "run"
    overrides = [f"--data={demo_faces}", f"--val_data={demo_faces}", "--attributes=",
                 "--train_sets=", "--val_sets=", "--epochs=1", "--input_size=32",
                 "--batch_size=4", "--train_limit=4", "--verbose=0", f"--output_dir={out}",
                 "--seed=3"]
    result = subprocess.run(
        [sys.executable, *TINY_TRAIN, f"--config={RECIPES / 'default.yaml'}", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["student"], saved["teacher"], saved["regularizers"]) == (
        "dlib_transfer", "dlib", "cls,feat,sa,ca")  # from the recipe
    assert (saved["seed"], saved["epochs"], saved["input_size"]) == (3, 1, 32)  # the flags
    (tmp_path / "copy.yaml").write_text(recipe_text(TrainConfig(**saved)))
    assert TrainConfig(**read_recipe(tmp_path / "copy.yaml", TrainConfig)) == TrainConfig(
        **{**saved, "resume": False, "verbose": 1})


def test_a_bad_recipe_is_one_line_and_writes_nothing(tmp_path):
    from .test_cli import assert_one_line_error, run

    bad = tmp_path / "bad.yaml"
    bad.write_text("student: resnet\n")
    out = tmp_path / "run"
    result = run("fas_tf.train", f"--config={bad}", f"--output_dir={out}")
    assert_one_line_error(result, str(bad), "student: 'resnet' is not one of")
    assert result.returncode == 2 and not out.exists()


@pytest.mark.parametrize("name, text", [("twice.yaml", "epochs: 3\nseed: 1\nepochs: 500\n"),
                                        ("twice.json", '{"epochs": 3, "epochs": 500}')])
def test_a_setting_given_twice_is_refused(tmp_path, name, text):
    """Both parsers kept the last value without a word (a probe after issue 39)."""
    recipe = tmp_path / name
    recipe.write_text(text)
    with pytest.raises(UsageError) as err:
        read_recipe(recipe, TrainConfig)
    assert str(err.value) == f"{recipe}: not a recipe ('epochs' is given twice)"

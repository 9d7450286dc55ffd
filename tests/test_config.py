"""Settings declared once: flags generated from the dataclass, recipes read with one-line errors."""

import json
from dataclasses import dataclass

import pytest
from absl import flags

from fas_tf.errors import UsageError
from fas_tf.training.config import (
    config_from_flags,
    define_flags,
    read_recipe,
    recipe_text,
    setting,
)


@dataclass
class Settings:
    name: str = setting("runs/x", "where")
    size: int = setting(128, "crop side")
    rate: float = setting(2e-3, "peak learning rate")
    epochs: int | None = setting(None, "epochs (default: by data)")
    sets: list[str] = setting(help="image sets", default_factory=list)
    kind: str = setting("a", "which kind", choices=("a", "b"))
    fast: bool = setting(False, "go fast")
    resume: bool = setting(False, "continue", recipe=False)
    library_only: bool = setting(True, "not a flag", flag=False)


def parsed(argv):
    fv = flags.FlagValues()
    define_flags(Settings, fv)
    fv(["prog", *argv])
    return fv


def test_one_flag_per_field_with_its_type_default_and_help():
    fv = parsed([])
    assert "library_only" not in fv
    assert fv["size"].help == "crop side" and fv["size"].value == 128
    assert fv["epochs"].value is None and fv["sets"].value is None
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", "--kind=c"])
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", "--size=big"])


def test_flags_override_the_recipe_which_overrides_the_defaults():
    fv = parsed(["--size=64", "--sets=ads,youtube2", "--fast"])
    config, given = config_from_flags(Settings, fv, recipe={"size": 96, "rate": 0.01})
    assert (config.size, config.rate, config.sets, config.fast) == (64, 0.01,
                                                                   ["ads", "youtube2"], True)
    assert config.name == "runs/x" and config.epochs is None
    assert given == {"size", "rate", "sets", "fast"}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_recipe_round_trip(tmp_path, suffix):
    config = Settings(size=64, rate=1, epochs=3, sets=["google2"], kind="b", resume=True)
    path = tmp_path / f"r{suffix}"
    if suffix == ".yaml":
        path.write_text(recipe_text(config, "a comment\nsecond line"))
        assert path.read_text().startswith("# a comment\n# second line\n")
    else:
        path.write_text(json.dumps({"size": 64, "rate": 1, "epochs": 3, "sets": "google2",
                                    "kind": "b", "library_only": True, "fast": False,
                                    "name": "runs/x"}))
    settings = read_recipe(path, Settings)
    assert "resume" not in settings  # how a run is driven is not part of its recipe
    assert isinstance(settings["rate"], float)
    assert Settings(**settings) == Settings(size=64, rate=1.0, epochs=3, sets=["google2"],
                                            kind="b")


def test_a_runs_config_json_is_a_recipe(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": {"size": 32, "resume": True, "gone": 1},
                                "versions": {}}))
    assert read_recipe(path, Settings) == {"size": 32}


@pytest.mark.parametrize("text, message", [
    ("size: 64\ncolour: red\n", "unknown setting 'colour'"),
    ("size: big\n", "size: expected int, got 'big'"),
    ("size: true\n", "size: expected int, got True"),
    ("kind: c\n", "kind: 'c' is not one of a, b"),
    ("sets: [1, 2]\n", "sets: expected a list of names"),
    ("resume: true\n", "resume is not a recipe setting"),
    ("- size\n", "a recipe is a mapping"),
    ("size: [\n", "not a recipe"),
])
def test_bad_recipes_are_one_line_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        read_recipe(path, Settings)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_missing_or_foreign_recipe_files(tmp_path):
    with pytest.raises(UsageError, match="cannot read the recipe"):
        read_recipe(tmp_path / "missing.yaml", Settings)
    with pytest.raises(UsageError, match="a .json, .yaml or .yml file"):
        read_recipe(tmp_path / "recipe.txt", Settings)

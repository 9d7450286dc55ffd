"""``python -m fas_tf.train``: train a landmark student (see ``--help``, docs/training.md).

Every flag is a field of :class:`fas_tf.training.config.TrainConfig` (flags are generated from
it); ``--config=RECIPE`` reads a recipe (YAML or JSON, e.g. ``recipes/default.yaml``) whose
settings the flags given on the command line override. With no ``--data`` it trains on a
generated synthetic demo set (not a clinical model). The library entry point is
:func:`fas_tf.training.loop.train`.
"""

from __future__ import annotations

import sys

from fas_tf import cli
from fas_tf.training.config import TrainConfig, config_from_flags, read_recipe


def define_flags() -> None:
    """``--config`` and one flag per :class:`TrainConfig` setting."""
    from absl import flags

    from fas_tf.training import config

    flags.DEFINE_string("config", None, "a recipe: YAML or JSON file of settings (e.g. "
                        "recipes/default.yaml); flags given here override it")
    config.define_flags(TrainConfig)
    flags.adopt_module_key_flags(config)  # --help lists them as this program's flags


def main(argv: list[str], builders=None) -> None:
    """Train as the flags say; ``builders`` (:class:`fas_tf.training.loop.Builders`) for tests."""
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from absl import flags

    from fas_tf.training.loop import train

    recipe = read_recipe(flags.FLAGS.config, TrainConfig) if flags.FLAGS.config else {}
    config, given = config_from_flags(TrainConfig, recipe=recipe)
    train(config, given=given, builders=builders)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
    sys.exit(0)

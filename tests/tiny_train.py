"""``python -m tests.tiny_train FLAGS``: ``python -m fas_tf.train`` whose runs build the tiny
student and teacher of tests/conftest.py (for tests of the training machinery in a process of
its own), with Grappler's rewrites skipped as in tests/conftest.py's ``pytest_configure`` (on 2
CPU cores they dominate the start-up of each process; the trained numbers do not change)."""

import sys

import tensorflow as tf

from fas_tf import cli, train
from tests.conftest import tiny_builders

if __name__ == "__main__":
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    train.define_flags()
    cli.run(lambda argv: train.main(argv, builders=tiny_builders(teacher=True)))
    sys.exit(0)

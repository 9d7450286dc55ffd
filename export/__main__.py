"""``python -m export``: Keras student -> quantized TFLite model + model.json, parity-checked.

``python -m export --model=RUN_DIR/student.keras --output=model.tflite
--quantize={float32,float16,dynamic,int8} [--representative_data=PATH] [--representative_sets=..]
[--val_data=PATH] [--val_sets=google2] [--num_calibration=200] [--max_nme_drift=0.5] [--force]
[--flip]``

``--flip`` builds test-time flip into the graph (the mean of the crop's and its mirror image's
landmarks; same input and outputs, about twice the work).

Outputs: ``--output`` (``NAME.tflite``) and its metadata ``NAME.json`` beside it. An existing
``NAME.json`` is replaced only when it is an earlier export's metadata (``"format":
"fas_tf.landmarks.tflite"``), an existing ``NAME.tflite`` only when that metadata records its
sha256; anything else (a run's ``config.json``, a user's file, an input) is refused before the
model is loaded.

Exit status: 0 written; 2 bad input or parity failure (one ``error: ...`` line, nothing written).
"""

from __future__ import annotations

from absl import flags

from export.convert import MODES, export_model
from fas_tf import cli

flags.DEFINE_string("model", None, "the trained student: RUN_DIR/student.keras")
flags.DEFINE_string("output", "model.tflite", "the .tflite to write, and beside it its metadata "
                    "NAME.json (model.tflite -> model.json); neither replaces a file that is not "
                    "an earlier export")
flags.DEFINE_enum("quantize", "int8", list(MODES), "float32, float16 weights, dynamic-range "
                  "int8 weights, or full-integer int8 with uint8 input")
flags.DEFINE_string("representative_data", None, "labelled training faces (folder of images + "
                    ".pts, or CSV) for int8 calibration; also the parity data without --val_data")
flags.DEFINE_string("representative_sets", None, "comma list of image_set values (attributes "
                    "CSV) used for calibration, e.g. ads,youtube2")
flags.DEFINE_string("val_data", None, "labelled faces for the parity check (default: "
                    "--representative_data)")
flags.DEFINE_string("val_sets", None, "comma list of image_set values for the parity check, "
                    "e.g. google2")
flags.DEFINE_string("attributes", None, "attributes CSV (default: attributes.csv in the data "
                    "folder)")
flags.DEFINE_integer("num_calibration", 200, "int8 calibration crops (framing-rule crops, "
                     "topped up with augmented ones)")
cli.define_float("max_nme_drift", 0.5, "refuse when TFLite NME exceeds Keras NME by more than "
                 "this many percentage points", lower=0.0)
flags.DEFINE_bool("flip", False, "test-time flip in the graph: average the crop's landmarks "
                  "with its mirror image's (two network runs per call); model.json records it")
flags.DEFINE_bool("force", False, "write the model even when the parity check fails")


def main(argv: list[str]) -> None:
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # the converter logs at INFO per SavedModel step
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    if not f.model:
        raise cli.UsageError("--model is required (RUN_DIR/student.keras)")
    export_model(
        f.model, f.output, f.quantize, f.representative_data, f.representative_sets,
        f.val_data, f.val_sets, f.attributes, f.num_calibration, f.max_nme_drift, f.force,
        flip=f.flip,
    )


if __name__ == "__main__":
    cli.run(main)

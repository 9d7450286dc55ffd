"""Export of the fas_tf landmark student to TFLite (LiteRT) for mobile screening apps.

- ``python -m export --model=RUN_DIR/student.keras --output=model.tflite --quantize=int8
  --representative_data=DATA``: convert, check accuracy parity, write ``model.tflite`` and
  ``model.json`` (:mod:`export.convert`);
- ``python -m export.benchmark model.tflite``: speed and size against MediaPipe's face landmark
  model (:mod:`export.benchmark`);
- :func:`fas_tf.inference.load_landmarker`: run an exported model on crops (the library's
  LiteRT landmarker; ``export`` imports only ``fas_tf``).

The app-side contract is in ``export/MOBILE.md``.
"""

# Imported while `python -m export` is located (sys.argv[0] == "-m"), so fas_tf keeps
# TensorFlow's start-up lines off the screen as for `python -m fas_tf.X` (fas_tf._quiet_tf).
import fas_tf  # noqa: E402, F401

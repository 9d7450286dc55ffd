"""Box -> crop calibration of each face detector (the one home of these constants).

For a detector box ``(bx, by, bw, bh)``, in the pixels of the (possibly turned) view the detector
ran on, the face's landmark bounding box is estimated as::

    centre = (bx + bw * (0.5 + dx), by + bh * (0.5 + dy))
    larger side = scale * max(bw, bh)

and the first crop is the framing rule on it (:data:`fas_tf.framing.FRAMING_SCALE` times that
side, centred there; :func:`fas_tf.framing.detector_square`). Each detector's constants are the
medians over the detections matched to the labelled training faces
(``benchmarks/detector_calibration.py --detector=NAME``).

This file holds plain literals only: other tools (the browser page's ``model.json`` export)
read :data:`BOX_TO_CROP` from here; keep its name and layout stable.
"""

from __future__ import annotations

BOX_TO_CROP: dict[str, dict[str, float]] = {
    # mtcnn 1.0 (box_format xywh, stage thresholds fas_tf.detection.MTCNN_THRESHOLDS), upright
    # photos: 185 of 210 faces matched; residual centre error 6 % of the landmark-box side,
    # side ratio p10-p90 0.86-1.16
    "mtcnn": {"dx": 0.023, "dy": 0.1062, "scale": 0.8649},
    # MediaPipe BlazeFace short-range (face_detection_short_range.tflite of mediapipe 0.10.21,
    # letterboxed 128x128 input), upright and turned views: 203 of 210 faces matched (the 7
    # others are docs/label_errors.txt); residual centre error 4.6 %, side ratio 0.88-1.11
    "blazeface": {"dx": -0.0084, "dy": -0.0208, "scale": 1.1091},
}

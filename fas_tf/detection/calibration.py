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
    # mtcnn 1.0 (box_format xywh, stage thresholds fas_tf.detection.MTCNN_THRESHOLDS)
    "mtcnn": {"dx": 0.023, "dy": 0.1062, "scale": 0.8649},
    # MediaPipe BlazeFace short-range as the web page runs it (web/src/blazeface.js: LiteRT.js,
    # letterboxed 128 px input, weighted NMS, score >= 0.5), calibrated on the 210 training
    # faces by benchmarks/web_blazeface_calibration.py (202 matches; branch web, to be
    # reconciled with the Python BlazeFace calibration of the detection side).
    "blazeface": {"dx": -0.0008, "dy": 0.007, "scale": 1.0769},
}

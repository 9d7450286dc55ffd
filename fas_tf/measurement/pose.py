"""Head pose from 68 landmarks, against a generic 3D infant head.

Head pose (``estimate_pose``): ``cv2.solvePnP`` of the pose landmarks (eye corners 36/39/42/45,
nose 27-35, upper jaw 0-3 and 13-16; not the brows, lids, mouth or chin, which move with
expression) against :data:`HEAD_MODEL`, a generic 3D 68-point *infant* head. The camera is a
pinhole with unknown focal length, approximated by a camera ``camera_distance`` IODs away from the
face with the principal point at the landmarks' centroid (so the angles are invariant to the
position, size and in-plane rotation of the landmark set; a large value approaches weak
perspective). Angles: R = Rz(roll) Rx(pitch) Ry(yaw) in the head frame (x: subject's left,
y: down, z: towards the camera); positive yaw turns the nose to +x (towards the subject's left),
positive pitch raises the chin. Their uncertainty is first-order: Cov(rvec) = (J^T W J)^-1 with J
the projection Jacobian and W^-1 = sigma_i^2 + the part of the fit's per-coordinate residual
variance that the landmark noise does not explain (the misfit of a generic rigid head to this
face: anatomy, expression), mapped to the angles.

``HEAD_MODEL`` was fitted to the ground-truth landmarks of the 159 InfAnFace-train faces of the
image sets ads and youtube2 by rigid structure from motion (Tomasi-Kanade factorization of the
roll-normalized 2D shapes, metric upgrade, mirror-symmetrized; benchmarks/measure_calibration.py
``--fit_head`` regenerates it). It is a measured infant mean shape, not an adult one scaled: in
IODs (outer canthi), its nose tip lies 0.36 in front of the outer canthi (a generic adult 68-point
head: ~0.48; infants' noses are flatter), the jaw corners 0/16 0.82 behind the nose tip (adult
~0.93), the chin 0.36 behind it (adult ~0.39) and the outer canthus 0.09 behind the inner one
(adult ~0.08).
"""

from __future__ import annotations

import math

import numpy as np

NUM_LANDMARKS = 68

# Generic infant 3D head , in IODs: x subject's left, y down, z towards
# the camera. Fitted by benchmarks/measure_calibration.py --fit_head (ads + youtube2 faces).
HEAD_MODEL = np.array([
    (-0.948, -0.351, -0.499), (-0.926, -0.152, -0.493), (-0.906, +0.033, -0.448),
    (-0.847, +0.212, -0.369), (-0.744, +0.376, -0.291), (-0.605, +0.524, -0.221),
    (-0.444, +0.642, -0.158), (-0.255, +0.745, -0.096), (+0.000, +0.823, -0.038),
    (+0.255, +0.745, -0.096), (+0.444, +0.642, -0.158), (+0.605, +0.524, -0.221),
    (+0.744, +0.376, -0.291), (+0.847, +0.212, -0.369), (+0.906, +0.033, -0.448),
    (+0.926, -0.152, -0.493), (+0.948, -0.351, -0.499), (-0.593, -0.579, -0.054),
    (-0.493, -0.633, +0.007), (-0.389, -0.661, +0.054), (-0.285, -0.660, +0.088),
    (-0.181, -0.630, +0.108), (+0.181, -0.630, +0.108), (+0.285, -0.660, +0.088),
    (+0.389, -0.661, +0.054), (+0.493, -0.633, +0.007), (+0.593, -0.579, -0.054),
    (+0.000, -0.405, +0.145), (+0.000, -0.315, +0.191), (+0.000, -0.240, +0.256),
    (+0.000, -0.157, +0.317), (-0.149, +0.007, +0.210), (-0.072, -0.001, +0.239),
    (+0.000, -0.002, +0.253), (+0.072, -0.001, +0.239), (+0.149, +0.007, +0.210),
    (-0.500, -0.387, -0.040), (-0.393, -0.452, +0.017), (-0.286, -0.459, +0.050),
    (-0.195, -0.394, +0.051), (-0.295, -0.362, +0.042), (-0.392, -0.363, +0.012),
    (+0.195, -0.394, +0.051), (+0.286, -0.459, +0.050), (+0.393, -0.452, +0.017),
    (+0.500, -0.387, -0.040), (+0.392, -0.363, +0.012), (+0.295, -0.362, +0.042),
    (-0.256, +0.373, +0.040), (-0.156, +0.275, +0.148), (-0.061, +0.216, +0.218),
    (+0.000, +0.216, +0.229), (+0.061, +0.216, +0.218), (+0.156, +0.275, +0.148),
    (+0.256, +0.373, +0.040), (+0.164, +0.471, +0.075), (+0.065, +0.515, +0.102),
    (+0.000, +0.521, +0.108), (-0.065, +0.515, +0.102), (-0.164, +0.471, +0.075),
    (-0.198, +0.379, +0.066), (-0.064, +0.291, +0.163), (+0.000, +0.279, +0.187),
    (+0.064, +0.291, +0.163), (+0.198, +0.379, +0.066), (+0.064, +0.440, +0.102),
    (+0.000, +0.450, +0.108), (-0.064, +0.440, +0.102),
])  # fmt: skip
POSE_LANDMARKS = (0, 1, 2, 3, 13, 14, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
MIN_POSE_LANDMARKS = 8


def check_landmarks(landmarks, confidence=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to float arrays (68, 2) and (68,); raise ValueError if invalid."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmarks contain NaN or infinite coordinates")
    if confidence is None:
        conf = np.ones(NUM_LANDMARKS)
    else:
        conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if conf.shape != (NUM_LANDMARKS,):
            raise ValueError(f"confidence must have shape (68,), got {conf.shape}")
        conf = np.clip(np.nan_to_num(conf, nan=0.0), 0.0, 1.0)
    return pts, conf


_FLIP_Z = np.diag([1.0, 1.0, -1.0])  # head frame (z towards the camera) <-> OpenCV (z away)


def _angles(rvec: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of an OpenCV rotation vector, R = Rz Rx Ry (head frame)."""
    import cv2

    r = _FLIP_Z @ cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0] @ _FLIP_Z
    pitch = math.asin(float(np.clip(r[2, 1], -1.0, 1.0)))
    yaw = math.atan2(-r[2, 0], r[2, 2])
    roll = math.atan2(-r[0, 1], r[1, 1])
    return np.degrees([yaw, pitch, roll])


def estimate_pose(
    landmarks,
    confidence=None,
    min_confidence: float = 0.5,
    sigma_floor: float = 0.01,
    k: float = 0.1,
    camera_distance: float = 4.0,
) -> dict[str, float]:
    """Head pose from the 68 landmarks: ``cv2.solvePnP`` against :data:`HEAD_MODEL`.

    Uses the :data:`POSE_LANDMARKS` with confidence >= ``min_confidence``; see the module
    docstring for the camera and the angle convention. Returns ``yaw_deg``, ``pitch_deg``,
    ``roll_deg``, their first-order standard deviations ``*_sigma_deg``, the RMS reprojection
    residual in IODs (``pose_residual``) and ``pose_landmarks`` (the count used); all NaN when
    fewer than :data:`MIN_POSE_LANDMARKS` are confident or the fit fails.
    """
    import cv2

    pts, conf = check_landmarks(landmarks, confidence)
    idx = [i for i in POSE_LANDMARKS if conf[i] >= min_confidence]
    nan = float("nan")
    out = {"yaw_deg": nan, "pitch_deg": nan, "roll_deg": nan, "yaw_sigma_deg": nan,
           "pitch_sigma_deg": nan, "roll_sigma_deg": nan, "pose_residual": nan,
           "pose_landmarks": len(idx)}  # fmt: skip
    iod = float(np.hypot(*(pts[45] - pts[36])))
    if len(idx) < MIN_POSE_LANDMARKS or iod <= 0:
        return out
    obj = (HEAD_MODEL[idx] - HEAD_MODEL[idx].mean(axis=0)) @ _FLIP_Z  # centroid on the axis
    img = pts[idx]
    centre = img.mean(axis=0)
    # image size of the model: RMS distance to the centroid, image over model
    scale = math.sqrt(np.mean(np.sum((img - centre) ** 2, axis=1)) /
                      np.mean(np.sum((obj[:, :2] - obj[:, :2].mean(0)) ** 2, axis=1)))  # fmt: skip
    if not scale > 0:
        return out
    f = camera_distance * scale
    cam = np.array([[f, 0.0, centre[0]], [0.0, f, centre[1]], [0.0, 0.0, 1.0]])
    # start from the in-plane rotation of the eye line, so any roll converges alike
    eye_axis = (pts[42] + pts[45] - pts[36] - pts[39]) / 2
    roll0 = math.atan2(eye_axis[1], eye_axis[0])
    ok, rvec, tvec = cv2.solvePnP(obj, img, cam, None, rvec=np.array([[0.0], [0.0], [roll0]]),
                                  tvec=np.array([[0.0], [0.0], [camera_distance]]),
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)  # fmt: skip
    if not ok:
        return out
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, cam, None, rvec, tvec, criteria)
    proj, jac = cv2.projectPoints(obj, rvec, tvec, cam, None)
    resid = proj.reshape(-1, 2) - img
    resid_var = float(np.sum(resid**2)) / max(2 * len(idx) - 6, 1)
    sigma_i = iod * (sigma_floor + k * (1.0 - conf[idx]))
    # variance per coordinate: landmark noise, plus the misfit the noise does not explain
    misfit = max(resid_var - float(np.mean(sigma_i**2)), 0.0)
    w = 1.0 / (np.repeat(sigma_i**2, 2) + misfit)
    j = jac[:, :6]
    try:
        cov = np.linalg.inv(j.T @ (w[:, None] * j))[:3, :3]
    except np.linalg.LinAlgError:
        cov = np.full((3, 3), np.inf)
    angles = _angles(rvec)
    grad = np.zeros((3, 3))
    for c in range(3):  # d angles / d rvec by central differences
        d = np.zeros((3, 1))
        d[c] = 1e-6
        diff = _angles(rvec + d) - _angles(rvec - d)
        grad[:, c] = (diff + 180.0) % 360.0 - 180.0
    grad /= 2e-6
    sig = np.sqrt(np.maximum(np.diag(grad @ cov @ grad.T), 0.0))
    out.update({"yaw_deg": float(angles[0]), "pitch_deg": float(angles[1]),
                "roll_deg": float(angles[2]), "yaw_sigma_deg": float(sig[0]),
                "pitch_sigma_deg": float(sig[1]), "roll_sigma_deg": float(sig[2]),
                "pose_residual": math.sqrt(float(np.mean(np.sum(resid**2, axis=1)))) / iod})
    return out

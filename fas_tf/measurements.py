"""FAS screening measurements from 68 facial landmarks, with uncertainties and verdicts.

**This is a measurement aid, not a diagnosis.** The numbers support a trained clinician who
applies established FAS criteria (e.g. Hoyme 2016, the 4-Digit Diagnostic Code); they are not a
screening decision on their own.

Landmarks are the 300-W / Multi-PIE 68-point layout (0-based) in image pixels. Anthropometric
points used (subject's point of view: the subject's *right* eye is landmarks 36-41, which is on
the *image left* in an ordinary, non-mirrored photo; a selfie-mirrored photo therefore swaps the
sides unless it is un-mirrored first):

    exocanthion  ex_r = 36, ex_l = 45     endocanthion  en_r = 39, en_l = 42
    nasion       n    = 27                 subnasale     sn   = 33
    pronasale    prn  = 30 (pose only)     labiale sup.  ls   = 51
    stomion      sto  = (62 + 66) / 2      cheilion      ch_r = 48, ch_l = 54
    gnathion     gn   = 8

Distances (pixels; millimetres too when ``mm_per_pixel`` is given):

    pfl_right   = |ex_r - en_r|        palpebral fissure length, subject's right eye
    pfl_left    = |en_l - ex_l|        palpebral fissure length, subject's left eye
    pfl_mean    = (pfl_right + pfl_left) / 2
    icd         = |en_r - en_l|        inner canthal distance
    ocd         = |ex_r - ex_l|        outer canthal distance (= inter-ocular distance, IOD)
    philtrum    = |sn - ls|            philtrum length
    upper_lip   = |ls - sto|           upper-lip vermilion height
    mouth_width = |ch_r - ch_l|
    face_height = |n - gn|

Ratios (no physical scale needed): see ``RATIOS`` (e.g. pfl_mean / icd, pfl_mean / ocd,
icd / ocd, philtrum / face_height, upper_lip / face_height, upper_lip / mouth_width).
All pixel values and ratios are invariant to translation and rotation of the landmark set; ratios,
verdicts and pose angles are also invariant to scale (except the minimum-face-size check, which is
in pixels on purpose). Only millimetre values depend on the absolute scale.

Uncertainty model (first order, isotropic, independent landmarks):

    s        = |p36 - p45|                                  face scale (IOD, as in NME)
    sigma_i  = s * (sigma_floor + k * (1 - c_i))            per-landmark std dev in pixels
    var(f)   = sum_i sigma_i^2 * |df/dp_i|^2                for any measurement f(p_0..p_67)

with c_i the landmark confidence clipped to [0, 1] (1 when no confidence is given). For a
distance d = |a - b| of two (weighted) points, df/dp_i = w_i * u with u the unit vector; for a
ratio r = d1 / d2, dr/dp_i = (dd1/dp_i - r * dd2/dp_i) / d2, so shared landmarks (e.g. en_r in
pfl_right / icd) are handled exactly. ``sigma_floor`` (default 1 % of IOD) is annotation-level
noise; ``k`` must be calibrated against the real model's confidences (see
benchmarks/measurement_error.py). Uncertainty of ``mm_per_pixel`` itself is not included.

Verdicts: each value is ``ok`` or ``not measurable`` with reasons (its value is then ``None``:
a wrong number is worse than no number). Reasons:

* a landmark the value needs has confidence < ``min_confidence``;
* the head is turned: |yaw| > ``max_yaw_deg`` (per-eye PFL: > ``max_yaw_unilateral_deg``,
  because the two eyes foreshorten in opposite directions, ~ +-0.35 tan(yaw), while the mean of
  both eyes cancels that to first order);
* the head is pitched: |pitch| > ``max_pitch_deg``;
* the face is too small: IOD < ``min_interocular_px``;
* the mouth is open (upper-lip height only, as stomion is the midpoint of 62 and 66):
  |p62 - p66| > ``max_lip_gap`` * |p51 - p62|;
* the propagated relative uncertainty sigma / value > ``max_relative_uncertainty``.

Pose (all estimates in the face's own frame, so they do not depend on roll): the x axis runs
from the right eye centre (p36 + p39) / 2 to the left one (p42 + p45) / 2, y is perpendicular,
pointing towards the mouth; c = (p36 + p45) / 2.

    yaw_eyes  = atan( x(p30 - c) / (x(p45 - p36) / 2) / 0.5 )
    yaw_jaw   = atan( (dR - dL) / (dR + dL) / 1.0 ),  dR = x(p30 - p0), dL = x(p16 - p30)
    yaw       = the cue of larger magnitude (conservative)
    t         = y(p30 - c) / y(m - c),   m = (p48 + p54) / 2
    pitch     = atan( (0.34 - t) / 0.4 )

Constants: a weak-perspective head whose nose tip is 0.5 half-IODs in front of the outer eye
corners (generic adult head models give ~0.6; infants' noses protrude less, and a smaller value
errs on the side of larger yaw), jaw points 0/16 one half-jaw-width behind the nose tip, nose tip
0.4 eye-to-mouth heights in front of the eye/mouth plane, and t0 = 0.34, the median of the faces
in InfAnFace-train not flagged "turned". Positive yaw: face turned towards the subject's left;
positive pitch: chin raised. Expect errors of several degrees (individual anatomy, landmark
noise): the thresholds are conservative gates, not head-pose measurements.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DISCLAIMER = (
    "Measurement aid only, not a diagnosis: values support a trained clinician applying "
    "established FAS criteria and must not be used as a screening decision on their own."
)
SIDE_CONVENTION = (
    "left/right are from the subject's point of view: the right eye is landmarks 36-41 "
    "(image left in a non-mirrored photo)"
)
NUM_LANDMARKS = 68

# Anthropometric points as weighted combinations of landmarks {index: weight}.
POINTS: dict[str, dict[int, float]] = {
    "ex_r": {36: 1.0},  # exocanthion, subject's right
    "en_r": {39: 1.0},  # endocanthion, subject's right
    "en_l": {42: 1.0},  # endocanthion, subject's left
    "ex_l": {45: 1.0},  # exocanthion, subject's left
    "n": {27: 1.0},  # nasion
    "sn": {33: 1.0},  # subnasale
    "ls": {51: 1.0},  # labiale superius
    "sto": {62: 0.5, 66: 0.5},  # stomion (midpoint of inner lips)
    "ch_r": {48: 1.0},  # cheilion, subject's right
    "ch_l": {54: 1.0},  # cheilion, subject's left
    "gn": {8: 1.0},  # gnathion
}

# name -> (point a, point b, description)
SEGMENTS: dict[str, tuple[str, str, str]] = {
    "pfl_right": ("ex_r", "en_r", "palpebral fissure length, subject's right eye (36-39)"),
    "pfl_left": ("en_l", "ex_l", "palpebral fissure length, subject's left eye (42-45)"),
    "icd": ("en_r", "en_l", "inner canthal distance (39-42)"),
    "ocd": ("ex_r", "ex_l", "outer canthal distance (36-45)"),
    "philtrum": ("sn", "ls", "philtrum length, subnasale-labiale superius (33-51)"),
    "upper_lip": ("ls", "sto", "upper-lip vermilion height, labiale superius-stomion (51-62/66)"),
    "mouth_width": ("ch_r", "ch_l", "mouth width, cheilion-cheilion (48-54)"),
    "face_height": ("n", "gn", "face height, nasion-gnathion (27-8)"),
}
DISTANCES: tuple[str, ...] = (
    "pfl_right", "pfl_left", "pfl_mean", "icd", "ocd", "philtrum", "upper_lip", "mouth_width",
    "face_height",
)  # fmt: skip
UNILATERAL = frozenset({"pfl_right", "pfl_left"})

# ratio name -> (numerator, denominator)
RATIOS: dict[str, tuple[str, str]] = {
    "pfl_right_to_icd": ("pfl_right", "icd"),
    "pfl_left_to_icd": ("pfl_left", "icd"),
    "pfl_mean_to_icd": ("pfl_mean", "icd"),
    "pfl_right_to_ocd": ("pfl_right", "ocd"),
    "pfl_left_to_ocd": ("pfl_left", "ocd"),
    "pfl_mean_to_ocd": ("pfl_mean", "ocd"),
    "icd_to_ocd": ("icd", "ocd"),
    "philtrum_to_face_height": ("philtrum", "face_height"),
    "upper_lip_to_face_height": ("upper_lip", "face_height"),
    "upper_lip_to_mouth_width": ("upper_lip", "mouth_width"),
    "philtrum_to_mouth_width": ("philtrum", "mouth_width"),
}

# Pose model constants (see module docstring).
NOSE_DEPTH_EYES = 0.5  # nose-tip depth in front of exocanthia, in half-IODs
NOSE_DEPTH_JAW = 1.0  # nose-tip depth in front of jaw points 0/16, in half jaw widths
PITCH_T0 = 0.34  # typical y(p30)/y(mouth) in the face frame (InfAnFace-train, not turned)
NOSE_DEPTH_PITCH = 0.4  # nose-tip depth in front of eye/mouth plane, in eye-mouth heights
POSE_LANDMARKS = (30, 36, 39, 42, 45, 48, 54)
JAW_LANDMARKS = (0, 16)


@dataclass(frozen=True)
class Thresholds:
    """Gates deciding ``ok`` vs ``not measurable`` (see module docstring for the reasoning)."""

    min_confidence: float = 0.5
    max_yaw_deg: float = 15.0
    max_yaw_unilateral_deg: float = 8.0
    max_pitch_deg: float = 15.0
    min_interocular_px: float = 60.0
    max_lip_gap: float = 0.2
    max_relative_uncertainty: float = 0.25
    sigma_floor: float = 0.01
    k: float = 0.1


class _Quantity:
    """A scalar function of the landmarks with its gradient d value / d p_i, shape (68, 2)."""

    def __init__(self, value: float, grad: np.ndarray, needs: frozenset[int]):
        self.value = value
        self.grad = grad
        self.needs = needs

    def sigma(self, sigma_i: np.ndarray) -> float:
        return float(np.sqrt(np.sum(sigma_i**2 * np.sum(self.grad**2, axis=1))))


def _point_weights(name: str) -> np.ndarray:
    w = np.zeros(NUM_LANDMARKS)
    for i, v in POINTS[name].items():
        w[i] = v
    return w


def _segment(pts: np.ndarray, a: str, b: str) -> _Quantity:
    """d = |A - B| with A, B weighted landmark points; dd/dp_i = (wA_i - wB_i) * u."""
    coef = _point_weights(a) - _point_weights(b)
    vec = coef @ pts
    d = float(np.hypot(vec[0], vec[1]))
    u = vec / d if d > 0 else np.zeros(2)
    needs = frozenset(POINTS[a]) | frozenset(POINTS[b])
    return _Quantity(d, np.outer(coef, u), needs)


def _mean(q1: _Quantity, q2: _Quantity) -> _Quantity:
    return _Quantity((q1.value + q2.value) / 2, (q1.grad + q2.grad) / 2, q1.needs | q2.needs)


def _ratio(q1: _Quantity, q2: _Quantity) -> _Quantity:
    """r = d1 / d2; dr/dp = (dd1/dp - r * dd2/dp) / d2."""
    if q2.value <= 0:
        return _Quantity(float("nan"), np.zeros_like(q1.grad), q1.needs | q2.needs)
    r = q1.value / q2.value
    return _Quantity(r, (q1.grad - r * q2.grad) / q2.value, q1.needs | q2.needs)


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


def _quantities(pts: np.ndarray) -> dict[str, _Quantity]:
    q = {name: _segment(pts, a, b) for name, (a, b, _) in SEGMENTS.items()}
    q["pfl_mean"] = _mean(q["pfl_right"], q["pfl_left"])
    for name, (num, den) in RATIOS.items():
        q[name] = _ratio(q[num], q[den])
    return q


def raw_measurements(landmarks) -> dict[str, float]:
    """All distances (px) and ratios without any gating (e.g. for ground truth)."""
    pts, _ = check_landmarks(landmarks)
    return {name: q.value for name, q in _quantities(pts).items()}


def estimate_pose(landmarks) -> dict[str, float]:
    """Roll, yaw and pitch estimates in degrees (yaw/pitch are roll-invariant), plus cues.

    See the module docstring for the formulas. Returns NaN for cues that are degenerate.
    """
    pts, _ = check_landmarks(landmarks)
    ex = (pts[42] + pts[45]) / 2 - (pts[36] + pts[39]) / 2
    norm = float(np.hypot(*ex))
    nan = float("nan")
    if norm <= 0:
        return {"roll_deg": nan, "yaw_deg": nan, "yaw_eyes_deg": nan, "yaw_jaw_deg": nan,
                "pitch_deg": nan, "nose_offset": nan, "nose_height": nan}  # fmt: skip
    ex = ex / norm
    ey = np.array([-ex[1], ex[0]])
    c = (pts[36] + pts[45]) / 2
    mouth = (pts[48] + pts[54]) / 2
    if (mouth - c) @ ey < 0:  # reflected landmark set: keep y pointing towards the mouth
        ey = -ey
    roll = math.degrees(math.atan2(ex[1], ex[0]))

    half_ocd = ((pts[45] - pts[36]) @ ex) / 2
    offset = ((pts[30] - c) @ ex) / half_ocd if half_ocd > 0 else nan
    yaw_eyes = math.degrees(math.atan(offset / NOSE_DEPTH_EYES))
    d_r = (pts[30] - pts[0]) @ ex
    d_l = (pts[16] - pts[30]) @ ex
    asym = (d_r - d_l) / (d_r + d_l) if d_r + d_l > 0 else nan
    yaw_jaw = math.degrees(math.atan(asym / NOSE_DEPTH_JAW)) if math.isfinite(asym) else 90.0
    h_mouth = (mouth - c) @ ey
    t = ((pts[30] - c) @ ey) / h_mouth if h_mouth > 0 else nan
    pitch = math.degrees(math.atan((PITCH_T0 - t) / NOSE_DEPTH_PITCH))
    yaw = yaw_eyes if abs(yaw_eyes) >= abs(yaw_jaw) else yaw_jaw
    return {"roll_deg": roll, "yaw_deg": yaw, "yaw_eyes_deg": yaw_eyes, "yaw_jaw_deg": yaw_jaw,
            "pitch_deg": pitch, "nose_offset": float(offset), "nose_height": float(t)}  # fmt: skip


def _low_conf(conf: np.ndarray, idx, thr: float) -> list[int]:
    return sorted(int(i) for i in idx if conf[i] < thr)


def _fmt(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def measure(
    landmarks,
    confidence=None,
    mm_per_pixel: float | None = None,
    thresholds: Thresholds | None = None,
    **overrides: float,
) -> dict:
    """Measure one face: distances, ratios, uncertainties and verdicts (a measurement aid only).

    Args:
        landmarks: (68, 2) array-like, 300-W layout, image pixels.
        confidence: optional (68,) per-landmark confidence in [0, 1] (None: all 1).
        mm_per_pixel: optional physical scale at the face; adds ``value_mm``/``sigma_mm``.
        thresholds: gates (defaults: ``Thresholds()``); keyword ``overrides`` replace single
            fields, e.g. ``measure(p, min_confidence=0.7)``.

    Returns:
        A JSON-serializable dict with keys ``disclaimer``, ``side_convention``, ``face``
        (pose, IOD, face-level verdict/reasons), ``distances`` and ``ratios`` (each
        ``{name: {value[_px], sigma[_px], (value_mm, sigma_mm), verdict, reasons, landmarks}}``,
        value ``None`` when not measurable) and ``thresholds``.

    Raises:
        ValueError: landmarks/confidence of the wrong shape or non-finite coordinates.
    """
    th = thresholds or Thresholds()
    if overrides:
        th = Thresholds(**{**asdict(th), **overrides})
    if mm_per_pixel is not None and not (mm_per_pixel > 0 and math.isfinite(mm_per_pixel)):
        raise ValueError(f"mm_per_pixel must be a positive number, got {mm_per_pixel}")
    pts, conf = check_landmarks(landmarks, confidence)
    iod = float(np.hypot(*(pts[45] - pts[36])))
    sigma_i = iod * (th.sigma_floor + th.k * (1.0 - conf))
    pose = estimate_pose(pts)

    face_reasons: list[str] = []
    if iod <= 1e-9:
        face_reasons.append("degenerate landmarks: outer eye corners coincide")
    elif iod < th.min_interocular_px:
        face_reasons.append(
            f"face too small: inter-ocular distance {iod:.1f} px < {th.min_interocular_px:g} px"
        )
    bad_pose = _low_conf(conf, POSE_LANDMARKS, th.min_confidence)
    yaw = pose["yaw_deg"]
    if bad_pose:
        face_reasons.append(f"head pose cannot be estimated: low confidence at landmark(s) "
                            f"{bad_pose}")  # fmt: skip
    else:
        if _low_conf(conf, JAW_LANDMARKS, th.min_confidence):  # fall back to the eye cue
            yaw = pose["yaw_eyes_deg"]
        if not math.isfinite(yaw) or abs(yaw) > th.max_yaw_deg:
            face_reasons.append(f"head turned: yaw ~{yaw:.0f} deg (limit {th.max_yaw_deg:g})")
        pitch = pose["pitch_deg"]
        if not math.isfinite(pitch) or abs(pitch) > th.max_pitch_deg:
            face_reasons.append(
                f"head pitched: pitch ~{pitch:.0f} deg (limit {th.max_pitch_deg:g})"
            )
    quantities = _quantities(pts)

    def reasons_for(name: str) -> list[str]:
        q = quantities[name]
        rs = list(face_reasons)
        low = _low_conf(conf, q.needs, th.min_confidence)
        if low:
            rs.append(f"low confidence (< {th.min_confidence:g}) at landmark(s) {low}")
        parts = RATIOS.get(name, (name,))
        if UNILATERAL.intersection(parts) and not bad_pose and math.isfinite(yaw):
            if th.max_yaw_unilateral_deg < abs(yaw) <= th.max_yaw_deg:
                rs.append(f"head turned too far for a single eye: yaw ~{yaw:.0f} deg "
                          f"(limit {th.max_yaw_unilateral_deg:g}); use pfl_mean")  # fmt: skip
        if "upper_lip" in parts:
            gap = float(np.hypot(*(pts[62] - pts[66])))
            ref = float(np.hypot(*(pts[51] - pts[62])))
            if gap > th.max_lip_gap * ref:
                rs.append(f"mouth open: lip gap {gap:.1f} px > {th.max_lip_gap:g} x "
                          f"upper-lip height {ref:.1f} px")  # fmt: skip
        sig = q.sigma(sigma_i)
        if not (q.value > 0 and math.isfinite(q.value)):
            rs.append("degenerate geometry (zero length)")
        elif sig / q.value > th.max_relative_uncertainty:
            rs.append(f"uncertainty too large: {100 * sig / q.value:.0f} % > "
                      f"{100 * th.max_relative_uncertainty:g} %")  # fmt: skip
        return rs

    distances = {}
    for name in DISTANCES:
        q = quantities[name]
        rs = reasons_for(name)
        ok = not rs
        sig = q.sigma(sigma_i)
        entry = {
            "value_px": _fmt(q.value) if ok else None,
            "sigma_px": _fmt(sig) if ok else None,
            "verdict": "ok" if ok else "not measurable",
            "reasons": rs,
            "landmarks": sorted(q.needs),
            "description": SEGMENTS[name][2] if name in SEGMENTS else
            "mean palpebral fissure length of both eyes",
        }  # fmt: skip
        if mm_per_pixel is not None:
            entry["value_mm"] = _fmt(q.value * mm_per_pixel) if ok else None
            entry["sigma_mm"] = _fmt(sig * mm_per_pixel) if ok else None
        distances[name] = entry
    ratios = {}
    for name, (num, den) in RATIOS.items():
        q = quantities[name]
        rs = reasons_for(name)
        ok = not rs
        ratios[name] = {
            "value": _fmt(q.value) if ok else None,
            "sigma": _fmt(q.sigma(sigma_i)) if ok else None,
            "verdict": "ok" if ok else "not measurable",
            "reasons": rs,
            "landmarks": sorted(q.needs),
            "description": f"{num} / {den}",
        }
    return {
        "disclaimer": DISCLAIMER,
        "side_convention": SIDE_CONVENTION,
        "face": {
            "verdict": "ok" if not face_reasons else "not measurable",
            "reasons": face_reasons,
            "interocular_px": iod,
            "mm_per_pixel": mm_per_pixel,
            **{k: _fmt(v) for k, v in pose.items()},
        },
        "distances": distances,
        "ratios": ratios,
        "thresholds": asdict(th),
    }

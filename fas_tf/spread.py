"""The spread between infants that a ratio's uncertainty is read against.

A ratio whose propagated sigma is at least ``Thresholds.max_sigma_to_spread`` (0.5) times the
usual spread between infants cannot tell this infant from a typical one: its 95 % interval
(+- 2 sigma) is then as wide as the middle two thirds of all infants. Such a value keeps its
number and ``+-`` but gets the verdict ``imprecise`` (not a plain ``ok``), with a reason in
plain words (:func:`imprecise_reason`). A measurement aid, not a diagnosis.

:data:`BETWEEN_INFANT_SD` is the robust SD (1.4826 x median absolute deviation, so that a few
mislabelled faces do not widen it) of each ratio over the InfAnFace-train calibration faces
(image sets ads + youtube2) whose ground-truth value is measurable;
``python benchmarks/clinical_agreement.py --data=../shared/data/infanface-train --spread``
recomputes it (:func:`fas_tf.agreement.between_infant_sd`).
"""

from __future__ import annotations

# ratio -> robust SD between infants (calibration faces ads + youtube2, ground-truth landmarks)
BETWEEN_INFANT_SD: dict[str, float] = {
    "pfl_right_to_icd": 0.1642, "pfl_left_to_icd": 0.1667, "pfl_mean_to_icd": 0.1814,
    "pfl_right_to_ocd": 0.0307, "pfl_left_to_ocd": 0.0288, "pfl_mean_to_ocd": 0.0263,
    "icd_to_ocd": 0.0556, "philtrum_to_face_height": 0.0329,
    "upper_lip_to_face_height": 0.0344, "upper_lip_to_mouth_width": 0.0545,
    "philtrum_to_mouth_width": 0.0809,
}  # fmt: skip
CALIBRATION_SETS = ("ads", "youtube2")
IMPRECISE_CODE = "imprecise"
IMPRECISE_TEXT = "too imprecise to tell this infant from a typical one"


def imprecise_reason(sigma: float, sd: float) -> str:
    """Why a value is ``imprecise``, in words for a clinician."""
    return (f"{IMPRECISE_TEXT}: the uncertainty (+- {sigma:.3f}) is {sigma / sd:.1f} x the usual "
            f"difference between infants (SD {sd:.3f}), so the value cannot show whether this "
            "infant is short, typical or long for this ratio; a sharper, frontal photo with "
            "eyes open and mouth closed, or a manual measurement, may help")  # fmt: skip


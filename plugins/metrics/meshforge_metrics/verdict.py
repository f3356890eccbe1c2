"""From figures to a verdict: normal, warning or failure, and the rule that decided.

Bands (defaults; each can be changed per request through the scorer's options or for a
whole installation with ``MESHFORGE_QUALITY_<OPTION>`` environment variables):

- **failure** when PSNR < 18 dB, or SSIM < 0.60, or silhouette IoU < 0.70 (checked in
  this order; the first that applies decides);
- **normal** when PSNR ≥ 25 dB and SSIM ≥ 0.85 (the product's definition);
- **warning** otherwise.

The figures judged are the means over the views the model was fitted to; with held-out
scoring they are reported beside them, and ``holdout_decides`` makes the verdict use them.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULTS = {"normal_psnr": 25.0, "normal_ssim": 0.85, "failure_psnr": 18.0, "failure_ssim": 0.60,
            "failure_iou": 0.70}


@dataclass(frozen=True)
class Verdict:
    status: str
    rule: str
    reason: str


def classify(summary: dict, bands: dict) -> Verdict:
    """``summary`` has ``psnr`` (dB), ``ssim`` and ``silhouette_iou`` (means over views)."""
    psnr, ssim, iou = summary["psnr"], summary["ssim"], summary["silhouette_iou"]
    if psnr < bands["failure_psnr"]:
        return Verdict("failure", "failure_psnr",
                       f"PSNR {psnr:.2f} dB is below the failure band (< {bands['failure_psnr']:g} dB)")
    if ssim < bands["failure_ssim"]:
        return Verdict("failure", "failure_ssim",
                       f"SSIM {ssim:.3f} is below the failure band (< {bands['failure_ssim']:g})")
    if iou < bands["failure_iou"]:
        return Verdict("failure", "failure_iou",
                       f"silhouette IoU {iou:.3f} is below the failure band (< {bands['failure_iou']:g}): the shape "
                       "does not cover the object seen in the views")
    if psnr >= bands["normal_psnr"] and ssim >= bands["normal_ssim"]:
        return Verdict("normal", "normal",
                       f"PSNR {psnr:.2f} dB ≥ {bands['normal_psnr']:g} dB and SSIM {ssim:.3f} ≥ {bands['normal_ssim']:g}")
    missed = []
    if psnr < bands["normal_psnr"]:
        missed.append(f"PSNR {psnr:.2f} dB < {bands['normal_psnr']:g} dB")
    if ssim < bands["normal_ssim"]:
        missed.append(f"SSIM {ssim:.3f} < {bands['normal_ssim']:g}")
    return Verdict("warning", "warning", "between the bands: " + " and ".join(missed))

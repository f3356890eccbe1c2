"""Markdown tables from the JSON files the benchmarks write (pasted into RESULTS.md).

    python benchmarks/tables.py benchmarks/results/fusion-contract.json [...]
"""

from __future__ import annotations

import json
import sys


def fusion_table(result: dict) -> str:
    lines = [f"Machine: {result['machine']['cores']} cores, {result['machine']['cpu']}, Python "
             f"{result['machine']['python']}. Command: `{result['command']}`", "",
             "| mesh | seconds (median of 3) | faces | F@1% | F@0.5% | Chamfer-L1 | held-out PSNR | held-out SSIM "
             "| independent evaluator: F@1% / PSNR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ind = r.get("independent") or {}
        ind_text = f"{ind['fscore@0.01']:.3f} / {ind['heldout_psnr']:.2f} dB" if ind else "—"
        lines.append(f"| {r['mesh']} | {r['seconds_median']:.2f} | {r['faces']:,} | {r['fscore@1%']:.3f} | "
                     f"{r['fscore@0.5%']:.3f} | {100 * r['chamfer_l1']:.2f} % | {r['heldout_psnr']:.2f} dB | "
                     f"{r['heldout_ssim']:.4f} | {ind_text} |")
    stages = result["rows"][0]["stages_last_run"]
    lines += ["", f"Stages of one run ({result['rows'][0]['mesh']}): " +
              ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())]
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        result = json.load(open(path))
        if result.get("benchmark") == "fusion":
            print(fusion_table(result))
            print()


if __name__ == "__main__":
    main()

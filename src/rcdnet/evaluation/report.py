"""``report.md``: the run's results beside the paper's RcdNet rows (Tables 1 and 2)."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

# Liu et al. 2025, Front. Bioeng. Biotechnol. 13:1526260, RcdNet rows of Table 1 (internal validation) and
# Table 2 (external test, UDIAT). The AUC is given in the text (0.9866, external); internal AUC only as "close to 1".
PAPER = {
    "busi-val": {"precision": 0.9515, "recall": 0.9508, "f1": 0.9504, "accuracy": 0.9504, "auc": None},
    "udiat": {"precision": 0.9168, "recall": 0.9495, "f1": 0.9290, "accuracy": 0.9351, "auc": 0.9866},
}
ROWS = [("accuracy", "Accuracy", "accuracy"), ("precision_macro", "Precision (macro)", "precision"),
        ("recall_macro", "Recall (macro)", "recall"), ("f1_macro", "F1 (macro)", "f1"),
        ("precision", "Precision (malignant)", None), ("sensitivity", "Sensitivity / recall (malignant)", None),
        ("specificity", "Specificity", None), ("f1", "F1 (malignant)", None), ("auc", "AUC", "auc")]


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
        commit += "+local changes" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"commit": commit, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "hardware": f"{cpu}, {torch.get_num_threads()} torch threads", "python": platform.python_version(),
            "torch": torch.__version__}


def _fmt(m: dict) -> str:
    v, ci = m["value"], m["ci"]
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def metrics_table(results: dict[str, dict], op: str) -> str:
    names = list(results)
    head = "| Metric | " + " | ".join(f"{n} (ours) | {n} (paper)" for n in names) + " |"
    sep = "|---|" + "---|---|" * len(names)
    lines = [head, sep]
    for key, label, paper_key in ROWS:
        cells = []
        for n in names:
            m = results[n]["operating_points"][op][key]
            paper = PAPER.get(n, {}).get(paper_key) if paper_key else None
            cells += [_fmt(m), f"{paper:.4f}" if paper is not None else "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    counts = " · ".join(f"{n}: TP {r['operating_points'][op]['counts']['tp']}, FP {r['operating_points'][op]['counts']['fp']}, "
                        f"TN {r['operating_points'][op]['counts']['tn']}, FN {r['operating_points'][op]['counts']['fn']}"
                        for n, r in results.items())
    return "\n".join(lines) + f"\n\nConfusion counts: {counts}\n"


def write_report(path: Path, *, cfg: dict, env: dict, data_summary: dict, history: list[dict], best: dict,
                 thresholds: dict, results: dict[str, dict], extra_results: dict[str, dict]) -> None:
    tot = sum(h["epoch_seconds"] for h in history)
    per_epoch = tot / max(len(history), 1)
    lines = [
        "# RcdNet run report", "",
        f"- commit `{env['commit']}`, {env['date']}, {env['hardware']}, Python {env['python']}, torch {env['torch']}",
        f"- model `{cfg['model']['name']}` (pretrained: {cfg['model']['pretrained']}, frozen stages: "
        f"{cfg['model']['freeze_stages']}), {cfg['train']['epochs']} epochs, batch {cfg['train']['batch_size']}, "
        f"Adam lr {cfg['train']['lr']}, weight decay {cfg['train']['weight_decay']}, cosine annealing, "
        f"label smoothing {cfg['augment']['label_smoothing']}, Mixup alpha {cfg['augment']['mixup_alpha']}, seed {cfg['seed']}",
        f"- generalisation options: ultrasound-shift variants {cfg['augment'].get('ultrasound_variants', 0)}, "
        f"overlay inpainting {cfg['data'].get('inpaint_overlays', False)}, letterbox {cfg['data']['letterbox']}, "
        f"EMA {cfg['train'].get('ema_decay', 0)}, SWA from epoch {cfg['train'].get('swa_start', 0) or 'off'}, "
        f"test-time mirror TTA {cfg['eval'].get('tta', False)}, "
        f"AdaBN on external sets {cfg['eval'].get('adabn', False)}",
        f"- training time: {tot / 60:.1f} min in all, {per_epoch:.1f} s per epoch (train + validation); "
        f"peak memory {max((h['peak_memory_mb'] for h in history), default=0):.0f} MB",
        f"- best epoch by validation {best.get('name', 'auc')}: {best['epoch']} "
        "(validation numbers are therefore slightly optimistic; the external set played no part in any choice)",
        "", "## Data", "",
    ]
    lines += [f"- {k}: {v}" for k, v in data_summary.items()]
    lines += ["", "## Operating points (chosen on validation only)", ""]
    lines += [f"- `{op}`: p(malignant) >= {t:.4f}" for op, t in thresholds.items()]
    for op in thresholds:
        lines += ["", f"## Results at the `{op}` operating point", "",
                  "95 % percentile-bootstrap confidence intervals in brackets. The paper reports one number per cell "
                  "(no intervals); its tables appear to average precision/recall/F1 over both classes (macro).", "",
                  metrics_table(results, op)]
    lines += ["", "## Calibration (expected calibration error, 10 bins)", ""]
    lines += [f"- {n}: ECE {r['ece_before_temperature']:.3f} before, {r['ece']:.3f} after temperature scaling "
              f"(T = {r['temperature']:.3f}, fitted on validation)" for n, r in results.items()]
    if extra_results:
        lines += ["", "## Sensitivity analyses", ""]
        for name, r in extra_results.items():
            d = r["operating_points"]["default"]
            lines.append(f"- {name} (n={r['n']}): AUC {_fmt(d['auc'])}, accuracy {_fmt(d['accuracy'])}, "
                         f"sensitivity {_fmt(d['sensitivity'])}, specificity {_fmt(d['specificity'])}")
    lines += ["", "## Figures", "", "![loss](loss_curve.png) ![accuracy](accuracy_curve.png)", "",
              "![ROC](roc.png) ![reliability](reliability.png)", ""]
    lines += [f"![{n} confusion]({n}_confusion.png)" for n in results]
    path.write_text("\n".join(lines) + "\n")

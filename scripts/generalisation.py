"""The generalisation ablation (issue: make the external numbers hold).

    python scripts/generalisation.py run NAME [NAME ...]   # configs/ablations/NAME.yaml -> runs/generalisation/NAME
    python scripts/generalisation.py table > docs/generalisation.md

`run` does, for each configuration, with the README's own commands: `rcdnet train` (which ends with the one
evaluation on UDIAT), `rcdnet robustness --levels 2` (the shift suite on validation at moderate strength, the level the
rule below reads), and the test-time variants on the same
checkpoint (mirror TTA; AdaBN on each target set). Finished steps are skipped, so it resumes after an interruption.

`table` collects every configuration evaluated and picks the default by a rule fixed before any result was seen,
which reads validation numbers only:  score = (validation AUC + worst moderate-shift AUC) / 2.
UDIAT numbers are reported for every row, never used to choose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path("runs/generalisation")
RCDNET = [sys.executable, "-m", "rcdnet"]
VARIANTS = {"": [], "+TTA": ["--tta"], "+AdaBN": ["--adabn"]}


def sh(args: list[str]) -> None:
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)


def run(names: list[str]) -> None:
    for name in names:
        cfg, out = Path("configs/ablations") / f"{name}.yaml", ROOT / name
        if not (out / "report.md").exists():
            sh(RCDNET + ["train", "--config", cfg, "--out", out, "--quiet"]
               + (["--resume"] if (out / "checkpoints" / "last.pt").exists() else []))
        for tag, flags in VARIANTS.items():
            sub = out / f"robustness{tag}"
            if not (sub / "robustness.json").exists():
                sh(RCDNET + ["robustness", out, "--out", sub, "--levels", "2", "--quiet", *flags])
            if tag:
                for ds in ("busi-val", "udiat"):
                    ev = out / f"eval{tag}"
                    if not (ev / f"{ds}_metrics.json").exists():
                        sh(RCDNET + ["evaluate", out, "--dataset", ds, "--out", ev, "--quiet", *flags])


def _row(name: str, tag: str) -> dict | None:
    out = ROOT / name
    rob = out / f"robustness{tag}" / "robustness.json"
    mdir = out / (f"eval{tag}" if tag else "")
    if not rob.exists() or not (mdir / "udiat_metrics.json").exists():
        return None
    val = json.loads((mdir / "busi-val_metrics.json").read_text())
    ext = json.loads((mdir / "udiat_metrics.json").read_text())
    s = json.loads(rob.read_text())["summary"]
    v, u = val["operating_points"]["default"], ext["operating_points"]["default"]
    return {"config": name + tag, "val_auc": v["auc"]["value"], "worst_moderate_auc": s["worst_moderate_auc"],
            "worst_moderate_shift": s["worst_moderate_shift"], "max_moderate_drop": s["max_moderate_drop"],
            "score": (v["auc"]["value"] + s["worst_moderate_auc"]) / 2,
            "udiat_auc": u["auc"]["value"], "udiat_auc_ci": u["auc"]["ci"], "udiat_acc": u["accuracy"]["value"],
            "udiat_sens": u["sensitivity"]["value"], "udiat_spec": u["specificity"]["value"],
            "ece_val": val.get("ece"), "ece_udiat": ext.get("ece"), "ece_udiat_t1": ext.get("ece_before_temperature")}


def table() -> None:
    rows = [r for name in sorted(p.name for p in ROOT.iterdir() if p.is_dir()) for tag in VARIANTS
            if (r := _row(name, tag))]
    if not rows:
        sys.exit(f"no finished configurations under {ROOT}")
    best = max(rows, key=lambda r: r["score"])
    f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    print("| configuration | val AUC | worst moderate shift AUC (shift) | max moderate drop | score | UDIAT AUC [95% CI] | "
          "UDIAT acc | UDIAT sens / spec | ECE val | ECE UDIAT (T=1 → T) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " **(chosen)**" if r is best else ""
        print(f"| {r['config']}{mark} | {f(r['val_auc'])} | {f(r['worst_moderate_auc'])} ({r['worst_moderate_shift']}) | "
              f"{f(r['max_moderate_drop'])} | {f(r['score'])} | {f(r['udiat_auc'])} [{f(r['udiat_auc_ci'][0])}, "
              f"{f(r['udiat_auc_ci'][1])}] | {f(r['udiat_acc'])} | {f(r['udiat_sens'])} / {f(r['udiat_spec'])} | "
              f"{f(r['ece_val'])} | {f(r['ece_udiat_t1'])} → {f(r['ece_udiat'])} |")
    print(f"\nChosen by score (validation only): {best['config']}")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "table"):
        sys.exit(__doc__)
    run(sys.argv[2:]) if sys.argv[1] == "run" else table()

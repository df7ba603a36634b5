"""The generalisation ablation (issue: make the external numbers hold).

    python scripts/generalisation.py run NAME [NAME ...]   # src/rcdnet/configs/recipes/NAME.yaml -> runs/generalisation/NAME
    python scripts/generalisation.py table > docs/generalisation.md

`run` does, for each configuration, with the README's own commands: `rcdnet train` (which ends with the one
evaluation on UDIAT), `rcdnet robustness --levels 2` (the shift suite on validation at moderate strength, the level the
rule below reads), and the test-time variants on the same
checkpoint (mirror TTA; AdaBN on each target set). Finished steps are skipped, so it resumes after an interruption.

`table` collects every configuration evaluated and picks the default by the rule (which never reads UDIAT),
which reads validation numbers only: score = (validation AUC + worst moderate-shift AUC) / 2, scores within 0.001 a
tie that goes to the configuration with fewer options. It also reports a proposed rule that adds a third term, the
mean moderate-shift sensitivity at the high-sensitivity threshold (threshold transfer), divided by 3. The proposal
was prompted by a UDIAT observation, so it does not choose here: it needs a further external set to be judged on.
UDIAT numbers are reported for every row and never read by the rule (they were seen while candidates were added).
"""

from __future__ import annotations

import csv
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
        cfg, out = Path("src/rcdnet/configs/recipes") / f"{name}.yaml", ROOT / name
        if not (out / "report.md").exists():
            sh(RCDNET + ["train", "--config", cfg, "--out", out, "--quiet"]
               + (["--resume"] if (out / "checkpoints" / "last.pt").exists() else []))
        for tag, flags in VARIANTS.items():
            sub = out / f"robustness{tag}"
            if not (sub / "robustness.json").exists():
                sh(RCDNET + ["robustness", out, "--out", sub, "--levels", "2", "--quiet", *flags])
            if tag:
                for ds in ("val", "udiat"):
                    ev = out / f"eval{tag}"
                    if not (ev / f"{ds}_metrics.json").exists():
                        sh(RCDNET + ["evaluate", out, "--dataset", ds, "--out", ev, "--quiet", *flags])


def _row(name: str, tag: str) -> dict | None:
    out = ROOT / name
    rob = out / f"robustness{tag}" / "robustness.json"
    mdir = out / (f"eval{tag}" if tag else "")
    if not rob.exists() or not (mdir / "udiat_metrics.json").exists():
        return None
    val_file = mdir / "val_metrics.json"  # busi-val_metrics.json in runs made before several sources existed
    val = json.loads((val_file if val_file.exists() else mdir / "busi-val_metrics.json").read_text())
    ext = json.loads((mdir / "udiat_metrics.json").read_text())
    s = json.loads(rob.read_text())["summary"]
    v, u = val["operating_points"]["default"], ext["operating_points"]["default"]
    return {"config": name + tag, "val_auc": v["auc"]["value"], "worst_moderate_auc": s["worst_moderate_auc"],
            "worst_moderate_shift": s["worst_moderate_shift"], "max_moderate_drop": s["max_moderate_drop"],
            "score_auc": (v["auc"]["value"] + s["worst_moderate_auc"]) / 2,
            "score": (None if s.get("mean_moderate_sensitivity_hs") is None else
                      (v["auc"]["value"] + s["worst_moderate_auc"] + s["mean_moderate_sensitivity_hs"]) / 3),
            "udiat_auc": u["auc"]["value"], "udiat_auc_ci": u["auc"]["ci"], "udiat_acc": u["accuracy"]["value"],
            "udiat_sens": u["sensitivity"]["value"], "udiat_spec": u["specificity"]["value"],
            "udiat_p": {r["key"]: (r["label"] == "malignant", float(r["p_malignant"]))
                        for r in csv.DictReader((mdir / "udiat_predictions.csv").open())},
            "ece_val": val.get("ece"), "ece_udiat": ext.get("ece"), "ece_udiat_t1": ext.get("ece_before_temperature"),
            "hs": {"val": val["operating_points"]["high_sensitivity"], "udiat": ext["operating_points"]["high_sensitivity"],
                   "shift_worst": s.get("worst_moderate_sensitivity_hs"),
                   "shift_worst_name": s.get("worst_moderate_sensitivity_hs_shift"),
                   "shift_mean": s.get("mean_moderate_sensitivity_hs")}}


def _n_options(config: str) -> int:
    """How many options a row adds to the paper recipe (ties in score go to the simpler configuration)."""
    name, *tags = config.split("+")
    return (0 if name == "paper" else len(name.split("_"))) + len(tags)


def _pick(rows: list[dict], key: str) -> dict:
    """The row with the highest ``key``; rows within 0.001 of it tie, and the tie goes to fewer options."""
    top = max(r[key] for r in rows)
    return min((r for r in rows if r[key] >= top - 0.001), key=lambda r: (_n_options(r["config"]), -r[key]))


def table() -> None:
    import numpy as np
    from scipy.stats import spearmanr

    from rcdnet.evaluation.delong import delong_test
    from rcdnet.runtime import environment

    rows = [r for name in sorted(p.name for p in ROOT.iterdir() if p.is_dir()) for tag in VARIANTS
            if (r := _row(name, tag))]
    if not rows:
        sys.exit(f"no finished configurations under {ROOT}")
    best = _pick(rows, "score_auc")  # the rule fixed beforehand
    scored = [r for r in rows if r["score"] is not None]
    proposed = _pick(scored, "score") if scored else None
    # under the proposed rule, a row whose shift suite predates the sensitivity term could still win if its score with
    # sensitivity 1 under every shift reaches the proposed pick's
    for r in rows:
        r["score_bound"] = (2 * r["score_auc"] + 1) / 3
    open_rows = [r["config"] for r in rows if proposed and r["score"] is None
                 and r["score_bound"] >= proposed["score"] - 0.001]
    f = lambda x: "–" if x is None else f"{x:.3f}"
    env = environment()
    print("# Generalisation ablation: BUSI -> UDIAT\n")
    print(f"Generated by `python scripts/generalisation.py table` from the runs of `python scripts/generalisation.py run "
          f"{' '.join(sorted(p.name for p in ROOT.iterdir() if p.is_dir()))}`; page written {env['date']} at commit "
          f"`{env['commit']}` on {env['hardware']} (each run's own commit and timing are in its report.md).\n")
    print("Rule (its first version written before any result; the 0.001 tie band and three rounds of candidates were "
          "added after UDIAT numbers had been printed, see docs/decisions.md): every configuration is trained on the "
          "BUSI training split, judged "
          "on the BUSI validation split and the shift suite at moderate strength, and evaluated on UDIAT once per "
          "configuration. The "
          "default is the row with the highest score = (validation AUC + worst moderate-shift AUC) / 2, scores within "
          "0.001 counting as a tie that goes to the row with fewer options; UDIAT columns are reported for every row "
          "and never read by the rule. `proposed score` adds a third term, the mean moderate-shift sensitivity at the "
          "high-sensitivity threshold (threshold transfer), and divides by 3; it was prompted by a UDIAT observation "
          "(see the reading), so it is reported and does not choose. A proposed score shown as `≤ x` belongs to a row "
          "whose shift suite predates the term: x is its value with sensitivity 1 under every shift. `+TTA` and "
          "`+AdaBN` are test-time variants of the same checkpoint (AdaBN re-estimates batch-norm statistics on each "
          "target set's images, never its labels); a re-run variant's operating points are chosen again on validation "
          "for that variant. Accuracy, sensitivity and specificity in this table are at p >= 0.5.\n")
    print("| configuration | val AUC | worst moderate shift AUC (shift) | max moderate drop | shift sens @HS (mean) | "
          "score | proposed score | UDIAT AUC [95% CI] | UDIAT acc | UDIAT sens / spec | ECE val | "
          "ECE UDIAT (T=1 → T) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " **(chosen)**" if r is best else ""
        print(f"| {r['config']}{mark} | {f(r['val_auc'])} | {f(r['worst_moderate_auc'])} ({r['worst_moderate_shift']}) | "
              f"{f(r['max_moderate_drop'])} | {f(r['hs']['shift_mean'])} | "
              f"{f(r['score_auc'])} | {f(r['score']) if r['score'] is not None else '≤ ' + f(r['score_bound'])} | "
              f"{f(r['udiat_auc'])} [{f(r['udiat_auc_ci'][0])}, "
              f"{f(r['udiat_auc_ci'][1])}] | {f(r['udiat_acc'])} | {f(r['udiat_sens'])} / {f(r['udiat_spec'])} | "
              f"{f(r['ece_val'])} | {f(r['ece_udiat_t1'])} → {f(r['ece_udiat'])} |")
    print(f"\nChosen by the rule (validation only): **{best['config']}**.\n")
    if proposed:
        print(f"The proposed rule would pick **{proposed['config']}** ({f(proposed['score'])})"
              + (f"; not settled, since {', '.join(open_rows)} could still reach that score" if open_rows else "")
              + ". It does not choose the default (see the reading).\n")
    keys = sorted(best["udiat_p"])
    print("## UDIAT: every configuration against the chosen one (paired DeLong)\n")
    print(f"Reported, never read by the rule: the difference in UDIAT AUC from the chosen configuration on the same "
          f"{len(keys)} images, with its 95% CI and the two-sided DeLong p-value (not adjusted for the number of rows).\n")
    rho = spearmanr([r["score_auc"] for r in rows], [r["udiat_auc"] for r in rows])
    rho_val = spearmanr([r["val_auc"] for r in rows], [r["udiat_auc"] for r in rows])
    print(f"Across the {len(rows)} rows, the rule's score and UDIAT AUC have Spearman rank correlation "
          f"{rho.statistic:+.2f} (p = {rho.pvalue:.2f}); validation AUC alone and UDIAT AUC {rho_val.statistic:+.2f} "
          f"(p = {rho_val.pvalue:.2f}). Rows share a checkpoint across test-time variants, so they are not independent.\n")
    print("| configuration | UDIAT AUC | difference from the chosen [95% CI] | p |")
    print("|---|---|---|---|")
    y = np.array([best["udiat_p"][k][0] for k in keys], int)
    for r in rows:
        if r is best:
            continue
        if sorted(r["udiat_p"]) != keys:
            print(f"| {r['config']} | {f(r['udiat_auc'])} | – (scored on other images) | – |")
            continue
        d = delong_test(y, np.array([r["udiat_p"][k][1] for k in keys]), np.array([best["udiat_p"][k][1] for k in keys]))
        print(f"| {r['config']} | {f(d.auc_a)} | {d.difference:+.3f} [{d.ci[0]:+.3f}, {d.ci[1]:+.3f}] | {d.p_value:.3f} |")
    print()
    print("## Threshold transfer at the high-sensitivity operating point\n")
    print("The threshold is chosen on the unshifted validation images for sensitivity >= 0.95 (per row and test-time "
          "variant); the shift-suite columns give the sensitivity that same threshold keeps under each moderate shift "
          "(worst shift, and the mean over the shifts). These are validation-side numbers a rule may read; UDIAT's are "
          "reported, never read.\n")
    print("| configuration | val sens / spec | shift suite: worst sens (shift) | shift suite: mean sens | "
          "UDIAT sens [95% CI] | UDIAT spec |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        h, v, u = r["hs"], r["hs"]["val"], r["hs"]["udiat"]
        worst = "–" if h["shift_worst"] is None else f"{f(h['shift_worst'])} ({h['shift_worst_name']})"
        print(f"| {r['config']} | {f(v['sensitivity']['value'])} / {f(v['specificity']['value'])} | {worst} | "
              f"{f(h['shift_mean'])} | {f(u['sensitivity']['value'])} [{f(u['sensitivity']['ci'][0])}, "
              f"{f(u['sensitivity']['ci'][1])}] | {f(u['specificity']['value'])} |")
    print()
    name = best["config"].split("+")[0]
    tag = best["config"][len(name):]
    rob = json.loads((ROOT / name / f"robustness{tag}" / "robustness.json").read_text())
    print("## Shift suite of the chosen configuration (moderate strength)\n")
    print((ROOT / name / f"robustness{tag}" / "robustness.md").read_text().split("\n", 2)[2].split("## Overlays")[0])
    print("## Overlays (calipers, text, colour marks) and the shortcut check\n")
    for ds, o in rob["overlays"].items():
        pc = o["per_class"]
        line = (f"- {ds}: " + "; ".join(f"{c}: {v['with_any']}/{v['images']} images with overlays "
                                         f"({v['with_marks_or_text']} marks/text, {v['with_colour']} colour)"
                                         for c, v in pc.items()))
        if "auc_with_overlays" in o:
            line += (f". AUC on images with overlays {f(o['auc_with_overlays'])} (n={o['n_with']}), "
                     f"without {f(o['auc_without_overlays'])} (n={o['n_without']})")
        print(line)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "table"):
        sys.exit(__doc__)
    run(sys.argv[2:]) if sys.argv[1] == "run" else table()

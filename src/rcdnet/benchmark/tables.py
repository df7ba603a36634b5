"""The benchmark's tables and figure, from the finished jobs' prediction files alone.

Per row and test set, every metric is the mean ± sd over the row's seeds, with a 95 % bootstrap CI of that mean
(images resampled once per draw, every seed scored on the same draw). Metrics are at p >= 0.5 on the
temperature-scaled probability, precision / recall / F1 macro-averaged as in the paper's tables. DeLong compares
the reference row with every other on the seed-mean probabilities, Holm-adjusted over the comparisons of a test
set.

    OUT/table1_internal.csv, OUT/table2_external.csv   the comparison rows (numbers: mean, sd, CI ends)
    OUT/ablation.csv, OUT/delong.csv, OUT/efficiency.csv
    OUT/roc.png          every comparison row's ROC curve, internal and external (the paper's Figure 3)
    OUT/benchmark.md     all of the above as one page
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from rcdnet.benchmark.profile import Profile, Row  # noqa: E402
from rcdnet.evaluation.delong import delong_test, holm  # noqa: E402
from rcdnet.evaluation.metrics import binary_metrics, bootstrap_mean_ci  # noqa: E402
from rcdnet.evaluation.report import environment  # noqa: E402
from rcdnet.files import write_csv  # noqa: E402

TEST_SETS = {"busi-val": "internal validation (BUSI)", "udiat": "external test (UDIAT)"}
# the paper's table columns first, then ours
COLUMNS = [("precision_macro", "Precision"), ("recall_macro", "Recall"), ("f1_macro", "F1-score"),
           ("accuracy", "Accuracy"), ("auc", "AUC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity")]
# Liu et al. 2025, Tables 1 and 2 (precision, recall, F1-score, accuracy; one run each, no CI), by row id
PAPER = {
    "busi-val": {"resnet": (0.9317, 0.9314, 0.9311, 0.9311), "mobilenet": (0.9372, 0.9316, 0.9306, 0.9308),
                 "regnet": (0.9393, 0.9393, 0.9391, 0.9392), "vit": (0.8203, 0.8183, 0.8176, 0.8178),
                 "resnext": (0.9339, 0.9393, 0.9391, 0.9337), "rcdnet": (0.9515, 0.9508, 0.9504, 0.9504)},
    "udiat": {"resnet": (0.8901, 0.9313, 0.9020, 0.9088), "mobilenet": (0.8960, 0.9358, 0.9084, 0.9150),
              "regnet": (0.8759, 0.9198, 0.8864, 0.8934), "vit": (0.8619, 0.8957, 0.8728, 0.8825),
              "resnext": (0.9101, 0.9461, 0.9227, 0.9289), "rcdnet": (0.9168, 0.9495, 0.9290, 0.9351)},
}
PAPER_NAMES = {"resnet": "ResNet50", "mobilenet": "MobileNetV2", "regnet": "RegNet", "vit": "ViT",
               "resnext": "ResNeXt", "rcdnet": "RcdNet"}


def read_predictions(path: Path) -> dict[str, tuple[int, float]]:
    """``<set>_predictions.csv`` -> key -> (1 if malignant, p_malignant)."""
    with open(path, newline="") as fh:
        return {r["key"]: (int(r["label"] == "malignant"), float(r["p_malignant"])) for r in csv.DictReader(fh)}


def row_predictions(profile: Profile, out: Path, row: Row, test_set: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(seeds found, y (N,), P (seeds, N)) for one row on one test set, aligned by image key."""
    seeds, per_seed = [], []
    for job in profile.jobs(out):
        if job.row.id == row.id and job.done:
            seeds.append(job.seed)
            per_seed.append(read_predictions(job.directory / f"{test_set}_predictions.csv"))
    if not per_seed:
        return [], np.zeros(0, int), np.zeros((0, 0))
    keys = sorted(per_seed[0])
    for s, preds in zip(seeds[1:], per_seed[1:]):
        if sorted(preds) != keys:
            raise ValueError(f"{row.id}: seed {s} was evaluated on other {test_set} images than seed {seeds[0]} "
                             "(the split must not depend on the seed: data.split_seed)")
    y = np.array([per_seed[0][k][0] for k in keys])
    return seeds, y, np.array([[preds[k][1] for k in keys] for preds in per_seed])


def summarise(y: np.ndarray, P: np.ndarray, n_boot: int) -> dict[str, dict]:
    """metric -> {mean, sd, lo, hi, per_seed} at p >= 0.5."""
    per_seed = [binary_metrics(y, p, 0.5) for p in P]
    ci = bootstrap_mean_ci(y, P, 0.5, n_boot)
    out = {}
    for key, _ in COLUMNS:
        vals = np.array([m[key] for m in per_seed])
        out[key] = {"mean": float(vals.mean()), "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "lo": ci[key][0], "hi": ci[key][1], "per_seed": vals.round(6).tolist()}
    return out


def _cell(m: dict) -> str:
    return f"{m['mean']:.3f} ± {m['sd']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def plot_rocs(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> Path:
    """``curves``: test set -> row label -> (y, seed-mean p). One panel per test set."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 5.2), dpi=120, squeeze=False)
    for ax, (test_set, rows) in zip(axes[0], curves.items()):
        for label, (y, p) in rows.items():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{label}: AUC {binary_metrics(y, p)['auc']:.3f}")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{TEST_SETS.get(test_set, test_set)}, n={len(y)}")
        ax.legend(loc="lower right", fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("ROC of the seed-mean probability per model", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_tables(profile: Profile, out: Path, efficiency: dict[str, dict], heat: dict[str, list[dict]] | None = None,
                 n_boot: int = 2000, command: str = "") -> dict:
    """Everything in OUT from the finished jobs; ``heat``: row -> ``agreement_table`` rows (optional)."""
    out = Path(out)
    stats: dict[str, dict[str, dict]] = {}      # row -> test set -> summary
    mean_p: dict[str, dict[str, tuple]] = {}    # row -> test set -> (y, seed-mean p)
    seeds_of: dict[str, list[int]] = {}
    for row in profile.rows.values():
        for test_set in TEST_SETS:
            seeds, y, P = row_predictions(profile, out, row, test_set)
            if not seeds:
                continue
            seeds_of[row.id] = seeds
            stats.setdefault(row.id, {})[test_set] = summarise(y, P, n_boot)
            mean_p.setdefault(row.id, {})[test_set] = (y, P.mean(0))
    delong = _delong_rows(profile, mean_p)
    times = _training_minutes(profile, out)
    csvs = {}
    for test_set, name in (("busi-val", "table1_internal"), ("udiat", "table2_external")):
        csvs[name] = [{"row": r, "model": profile.rows[r].label, "weights": profile.rows[r].weights,
                       "seeds": len(seeds_of[r]),
                       **{f"{k}_{s}": round(stats[r][test_set][k][s], 6) for k, _ in COLUMNS
                          for s in ("mean", "sd", "lo", "hi")}}
                      for r in profile.comparison if test_set in stats.get(r, {})]
        write_csv(out / f"{name}.csv", csvs[name])
    ablation_rows = [{"row": r, "label": label, "weights": profile.rows[r].weights, "seeds": len(seeds_of[r]),
                      **{f"{t}_{k}_{s}": round(stats[r][t][k][s], 6) for t in TEST_SETS if t in stats[r]
                         for k in ("auc", "accuracy", "sensitivity", "specificity") for s in ("mean", "sd", "lo", "hi")}}
                     for r, label in profile.ablation if r in stats]
    write_csv(out / "ablation.csv", ablation_rows)
    write_csv(out / "delong.csv", delong)
    eff_rows = [{"row": r, "model": profile.rows[r].label, **{k: round(v, 4) if isinstance(v, float) else v
                                                              for k, v in efficiency.get(r, {}).items()},
                 "train_minutes_mean": times.get(r, {}).get("mean"), "train_threads": times.get(r, {}).get("threads")}
                for r in profile.rows]
    write_csv(out / "efficiency.csv", eff_rows)
    curves = {t: {f"{profile.rows[r].label} [{profile.rows[r].weights}]": mean_p[r][t]
                  for r in profile.comparison if t in mean_p.get(r, {})} for t in TEST_SETS}
    plot_rocs({t: c for t, c in curves.items() if c}, out / "roc.png")
    summary = {"env": environment(), "profile": profile.name, "seeds": profile.seeds, "stats": stats,
               "seeds_found": seeds_of, "delong": delong, "efficiency": efficiency, "training_minutes": times,
               "heat_maps": heat or {}, "command": command or f"rcdnet benchmark --profile {profile.name}"}
    (out / "benchmark.json").write_text(json.dumps(summary, indent=1))
    (out / "benchmark.md").write_text(markdown(profile, summary))
    return summary


def _delong_rows(profile: Profile, mean_p: dict) -> list[dict]:
    ref = profile.reference
    rows = []
    for test_set in TEST_SETS:
        if test_set not in mean_p.get(ref, {}):
            continue
        y, p_ref = mean_p[ref][test_set]
        block = []
        for rid in profile.rows:
            if rid == ref or test_set not in mean_p.get(rid, {}):
                continue
            r = delong_test(y, p_ref, mean_p[rid][test_set][1])
            block.append({"test_set": test_set, "reference": ref, "other": rid, "auc_reference": round(r.auc_a, 4),
                          "auc_other": round(r.auc_b, 4), "difference": round(r.difference, 4),
                          "ci_lo": round(r.ci[0], 4), "ci_hi": round(r.ci[1], 4), "z": round(r.z, 3),
                          "p": r.p_value})
        for b, adj in zip(block, holm([b["p"] for b in block])):
            b["p_holm"] = adj
        rows += block
    return rows


def _training_minutes(profile: Profile, out: Path) -> dict[str, dict]:
    times: dict[str, dict] = {}
    for job in profile.jobs(out):
        if not job.done:
            continue
        m = json.loads((job.directory / "metrics.json").read_text())
        info = json.loads((job.directory / "job.json").read_text()) if (job.directory / "job.json").is_file() else {}
        t = times.setdefault(job.row.id, {"minutes": [], "threads": info.get("threads")})
        t["minutes"].append(m["timing"]["total_seconds"] / 60)
    for t in times.values():
        t["mean"] = round(float(np.mean(t["minutes"])), 2)
    return times


def findings(profile: Profile, s: dict, alpha: float = 0.05) -> list[str]:
    """Bullet points read off the tables: who leads on AUC, which DeLong differences survive Holm."""
    ref, lines = profile.reference, []
    label = {rid: profile.rows[rid].label.split(" (")[0] for rid in profile.rows}  # short names
    for test_set, name in TEST_SETS.items():
        aucs = {r: s["stats"][r][test_set]["auc"]["mean"] for r in profile.comparison if test_set in s["stats"].get(r, {})}
        if not aucs:
            continue
        best = max(aucs, key=aucs.get)
        tests = [d for d in s["delong"] if d["test_set"] == test_set and d["other"] in profile.comparison]
        better = [d for d in tests if d["p_holm"] < alpha and d["difference"] > 0]
        worse = [d for d in tests if d["p_holm"] < alpha and d["difference"] < 0]
        lead = (f"{label[ref]} has the highest mean AUC ({aucs[best]:.3f})" if best == ref else
                f"{label[best]} has the highest mean AUC ({aucs[best]:.3f}), {label[ref]} {aucs.get(ref, float('nan')):.3f}")
        lines.append(f"- {name}: {lead}. DeLong, Holm-adjusted at {alpha}: {label[ref]} higher than "
                     f"{len(better)} of the {len(tests)} other models, lower than {len(worse)}.")
        for rid, _ in profile.ablation:
            d = next((d for d in s["delong"] if d["test_set"] == test_set and d["other"] == rid), None)
            if d is None:
                continue
            verdict = "significant" if d["p_holm"] < alpha else "not significant"
            lines.append(f"  - ablation, {label[ref]} vs {label[rid]}: seed-ensemble AUC {d['auc_reference']:.3f} vs "
                         f"{d['auc_other']:.3f}, difference {d['difference']:+.3f} ({verdict}, Holm p {_p(d['p_holm'])})")
    return lines


def heat_map_lines(profile: Profile, heat: dict[str, list[dict]]) -> list[str]:
    """The heat-map agreement table: each comparison row's first seed, malignant-class maps, every masked image."""
    if not heat:
        return []
    lines = ["## Heat maps against the radiologists' lesion masks", "",
             "Each comparison row's first seed, maps for the malignant class at the model's default target layer "
             "(`rcdnet explain --evaluate`, docs/explain.md): share of heat-map energy inside the mask (all masked "
             "images [95 % CI], and malignant images only), pointing game (15 px tolerance), and faithfulness "
             "ROAD (LeRF − MoRF)/2 on 40 images per set (positive: removing the top-ranked pixels lowers "
             "p(malignant) more than removing the lowest-ranked). The centre prior is a fixed Gaussian that ignores "
             "the image.", "",
             "| Model | set | method | layer | energy in mask [95% CI] | energy, malignant | pointing game | "
             "ROAD (LeRF−MoRF)/2 |", "|---|---|---|---|---|---|---|---|"]
    for rid in profile.comparison:
        for r in heat.get(rid, []):
            name = "centre prior" if r["method"] == "centre-prior" else profile.rows[rid].label
            lines.append(f"| {name} | {r['dataset']} | {r['method']} | {r['layer']} | {r['energy_in_mask']:.3f} "
                         f"[{r['energy_ci'][0]:.3f}, {r['energy_ci'][1]:.3f}] | {r['energy_in_mask_malignant']:.3f} | "
                         f"{r['pointing_game']:.3f} | {r['road_combined']:+.3f} |")
    return lines + [""]


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def markdown(profile: Profile, s: dict) -> str:
    env, cfg0 = s["env"], profile.rows[profile.reference].config
    lines = [f"# Benchmark: RcdNet against other architectures (profile `{profile.name}`)", "",
             f"`{s['command']}` at commit `{env['commit']}`, {env['date']}, {env['hardware']}, torch {env['torch']}.",
             "",
             f"Every row: the same split (split seed {cfg0['data']['split_seed']}), preprocessing, augmentation and "
             f"recipe; {cfg0['data']['image_size']} px, {cfg0['train']['epochs']} epochs, seeds "
             f"{', '.join(map(str, profile.seeds))}. Cells: mean ± sd over seeds [95 % bootstrap CI of the mean, "
             "2000 resamples of the images]. Threshold p >= 0.5 on the temperature-scaled probability; precision, "
             "recall and F1-score macro-averaged over the two classes (the paper's tables); sensitivity and "
             "specificity for malignant. \"scratch\" rows had no ImageNet weights (none can be had offline here "
             "except EfficientNet-Lite's).", ""]
    lines += ["## Findings (generated)", "", *findings(profile, s), ""]
    for test_set, title in (("busi-val", "Table 1: internal validation (BUSI)"),
                            ("udiat", "Table 2: external test (UDIAT)")):
        lines += [f"## {title}", "", "| Model | Weights | seeds | " + " | ".join(c for _, c in COLUMNS) + " |",
                  "|---|---|---|" + "---|" * len(COLUMNS)]
        for r in profile.comparison:
            if test_set in s["stats"].get(r, {}):
                st = s["stats"][r][test_set]
                lines.append(f"| {profile.rows[r].label} | {profile.rows[r].weights} | {len(s['seeds_found'][r])} | "
                             + " | ".join(_cell(st[k]) for k, _ in COLUMNS) + " |")
        lines += ["", "The paper's rows (one run each, ImageNet-pretrained full-size models, no CI): ", "",
                  "| Model (paper) | Precision | Recall | F1-score | Accuracy |", "|---|---|---|---|---|"]
        for rid, vals in PAPER[test_set].items():
            lines.append(f"| {PAPER_NAMES[rid]} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
        lines.append("")
    ref_label = profile.rows[profile.reference].label
    lines += ["## Paired AUC comparison (DeLong)", "",
              f"{ref_label} against each other row, on the seed-mean probabilities; p two-sided, Holm-adjusted over "
              "the comparisons on the same test set.", "",
              "| Test set | Other row | AUC reference | AUC other | difference [95 % CI] | z | p | p (Holm) |",
              "|---|---|---|---|---|---|---|---|"]
    for d in s["delong"]:
        lines.append(f"| {d['test_set']} | {profile.rows[d['other']].label} | {d['auc_reference']:.3f} | "
                     f"{d['auc_other']:.3f} | {d['difference']:+.3f} [{d['ci_lo']:+.3f}, {d['ci_hi']:+.3f}] | "
                     f"{d['z']:.2f} | {_p(d['p'])} | {_p(d['p_holm'])} |")
    if profile.ablation:
        lines += ["", "## Ablation: where RcdNet's gain comes from", "",
                  "| Row | Weights | seeds | BUSI AUC | BUSI accuracy | UDIAT AUC | UDIAT accuracy | UDIAT sensitivity "
                  "| UDIAT specificity |", "|---|---|---|---|---|---|---|---|---|"]
        for rid, label in profile.ablation:
            st = s["stats"].get(rid)
            if not st:
                continue
            cells = [_cell(st[t][k]) if t in st else "" for t, k in
                     (("busi-val", "auc"), ("busi-val", "accuracy"), ("udiat", "auc"), ("udiat", "accuracy"),
                      ("udiat", "sensitivity"), ("udiat", "specificity"))]
            lines.append(f"| {label} | {profile.rows[rid].weights} | {len(s['seeds_found'][rid])} | "
                         + " | ".join(cells) + " |")
    lines += ["", "## Size, cost and speed", "",
              "Parameters and GFLOPs from torch (`torch.utils.flop_counter`: a multiply-add counts 2); training minutes "
              "per run (mean over seeds; threads per run as listed); latency of one image and throughput of batches "
              "of 32, eager fp32 forward on this CPU, all threads, measured one model at a time after training.", "",
              "| Model | Params (M) | GFLOPs @224 | GFLOPs @run size | training min / run | threads | latency ms / image "
              "| images / s |", "|---|---|---|---|---|---|---|---|"]
    for rid, row in profile.rows.items():
        e, t = s["efficiency"].get(rid, {}), s["training_minutes"].get(rid, {})
        if not e:
            continue
        lines.append(f"| {row.label} | {e['params_m']:.2f} | {e['gflops_224']:.2f} | {e['gflops']:.2f} @{e['image_size']} | "
                     f"{t.get('mean', '')} | {t.get('threads', '')} | {e['latency_ms']:.1f} | "
                     f"{e['throughput_img_s']:.0f} |")
    lines += ["", "![ROC curves of every model, internal and external](roc.png)", ""]
    lines += heat_map_lines(profile, s["heat_maps"])
    missing = [j.name for j in profile.jobs(Path("."))
               if j.seed not in s["seeds_found"].get(j.row.id, [])]
    if missing:
        lines += [f"Jobs without results (failed or not run yet): {', '.join(missing)}.", ""]
    return "\n".join(lines)

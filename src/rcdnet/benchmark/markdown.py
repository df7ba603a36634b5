"""``benchmark.md``: the benchmark's numbers (:mod:`rcdnet.benchmark.stats`) as one page, beside the paper's."""

from __future__ import annotations

from pathlib import Path

from rcdnet.benchmark.profile import Profile
from rcdnet.benchmark.stats import COLUMNS, TEST_SETS
from rcdnet.data.inputs import VALIDATION
from rcdnet.evaluation.paper import PAPER_NAMES, PAPER_TABLES
from rcdnet.files import markdown_table


def _cell(m: dict) -> str:
    return f"{m['mean']:.3f} ± {m['sd']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


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
             "the image.", ""]
    rows = [["centre prior" if r["method"] == "centre-prior" else profile.rows[rid].label, r["dataset"], r["method"],
             r["layer"], f"{r['energy_in_mask']:.3f} [{r['energy_ci'][0]:.3f}, {r['energy_ci'][1]:.3f}]",
             f"{r['energy_in_mask_malignant']:.3f}", f"{r['pointing_game']:.3f}", f"{r['road_combined']:+.3f}"]
            for rid in profile.comparison for r in heat.get(rid, [])]
    return lines + markdown_table(["Model", "set", "method", "layer", "energy in mask [95% CI]", "energy, malignant",
                                   "pointing game", "ROAD (LeRF−MoRF)/2"], rows) + [""]


def _tables_1_2(profile: Profile, s: dict) -> list[str]:
    lines = []
    for test_set, title in ((VALIDATION, "Table 1: internal validation (BUSI)"),
                            ("udiat", "Table 2: external test (UDIAT)")):
        rows = [[profile.rows[r].label, profile.rows[r].weights, len(s["seeds_found"][r])]
                + [_cell(s["stats"][r][test_set][k]) for k, _ in COLUMNS]
                for r in profile.comparison if test_set in s["stats"].get(r, {})]
        paper_set = "busi-val" if test_set == VALIDATION else test_set  # benchmark profiles train on BUSI alone
        paper = [[PAPER_NAMES[rid]] + [f"{v:.4f}" for v in vals] for rid, vals in PAPER_TABLES[paper_set].items()]
        lines += [f"## {title}", "", *markdown_table(["Model", "Weights", "seeds"] + [c for _, c in COLUMNS], rows),
                  "", "The paper's rows (one run each, ImageNet-pretrained full-size models, no CI): ", "",
                  *markdown_table(["Model (paper)", "Precision", "Recall", "F1-score", "Accuracy"], paper), ""]
    return lines


def _delong_section(profile: Profile, s: dict) -> list[str]:
    rows = [[d["test_set"], profile.rows[d["other"]].label, f"{d['auc_reference']:.3f}", f"{d['auc_other']:.3f}",
             f"{d['difference']:+.3f} [{d['ci_lo']:+.3f}, {d['ci_hi']:+.3f}]", f"{d['z']:.2f}", _p(d["p"]),
             _p(d["p_holm"])] for d in s["delong"]]
    return ["## Paired AUC comparison (DeLong)", "",
            f"{profile.rows[profile.reference].label} against each other row, on the seed-mean probabilities; "
            "p two-sided, Holm-adjusted over the comparisons on the same test set; the variance counts each duplicate "
            "or patient group as one case (Obuchowski's clustered form of DeLong's test).", "",
            *markdown_table(["Test set", "Other row", "AUC reference", "AUC other", "difference [95 % CI]", "z", "p",
                             "p (Holm)"], rows)]


def _ablation_section(profile: Profile, s: dict) -> list[str]:
    if not profile.ablation:
        return []
    cols = ((VALIDATION, "auc"), (VALIDATION, "accuracy"), ("udiat", "auc"), ("udiat", "accuracy"),
            ("udiat", "sensitivity"), ("udiat", "specificity"))
    rows = [[label, profile.rows[rid].weights, len(s["seeds_found"][rid])]
            + [_cell(s["stats"][rid][t][k]) if t in s["stats"][rid] else "" for t, k in cols]
            for rid, label in profile.ablation if s["stats"].get(rid)]
    return ["", "## Ablation: where RcdNet's gain comes from", "",
            *markdown_table(["Row", "Weights", "seeds", "BUSI AUC", "BUSI accuracy", "UDIAT AUC", "UDIAT accuracy",
                             "UDIAT sensitivity", "UDIAT specificity"], rows)]


def _efficiency_section(profile: Profile, s: dict) -> list[str]:
    rows = []
    for rid, row in profile.rows.items():
        e, t = s["efficiency"].get(rid, {}), s["training_minutes"].get(rid, {})
        if e:
            rows.append([row.label, f"{e['params_m']:.2f}", f"{e['gflops_224']:.2f}",
                         f"{e['gflops']:.2f} @{e['image_size']}", t.get("mean", ""), t.get("threads", ""),
                         f"{e['latency_ms']:.1f}", f"{e['throughput_img_s']:.0f}"])
    return ["", "## Size, cost and speed", "",
            "Parameters and GFLOPs from torch (`torch.utils.flop_counter`: a multiply-add counts 2); training minutes "
            "per run (mean over seeds; threads per run as listed); latency of one image and throughput of batches "
            "of 32, eager fp32 forward on this CPU, all threads, measured one model at a time after training.", "",
            *markdown_table(["Model", "Params (M)", "GFLOPs @224", "GFLOPs @run size", "training min / run", "threads",
                             "latency ms / image", "images / s"], rows)]


def markdown(profile: Profile, s: dict) -> str:
    env, cfg0 = s["env"], profile.rows[profile.reference].config
    lines = [f"# Benchmark: RcdNet against other architectures (profile `{profile.name}`)", "",
             f"`{s['command']}` at commit `{env['commit']}`, {env['date']}, {env['hardware']}, torch {env['torch']}.",
             "",
             f"Every row: the same split (split seed {cfg0.data.split_seed}), preprocessing, augmentation and "
             f"recipe; {cfg0.data.image_size} px, {cfg0.train.epochs} epochs, seeds "
             f"{', '.join(map(str, profile.seeds))}. Cells: mean ± sd over seeds [95 % bootstrap CI of the mean, "
             f"{s.get('n_boot', 2000)} resamples of duplicate and patient groups, drawn whole: "
             + "; ".join(f"{t}: {c}" for t, c in s.get("clusters", {}).items()) + "]. Threshold p >= 0.5 on the temperature-scaled probability; precision, "
             "recall and F1-score macro-averaged over the two classes (the paper's tables); sensitivity and "
             "specificity for malignant. \"scratch\" rows had no ImageNet weights (none can be had offline here "
             "except EfficientNet-Lite's).", ""]
    lines += ["## Findings (generated)", "", *findings(profile, s), ""]
    lines += _tables_1_2(profile, s) + _delong_section(profile, s) + _ablation_section(profile, s)
    lines += _efficiency_section(profile, s)
    lines += ["", "![ROC curves of every model, internal and external](roc.png)", ""]
    lines += heat_map_lines(profile, s["heat_maps"])
    missing = [j.name for j in profile.jobs(Path("."))
               if j.seed not in s["seeds_found"].get(j.row.id, [])]
    if missing:
        lines += [f"Jobs without results (failed or not run yet): {', '.join(missing)}.", ""]
    return "\n".join(lines)

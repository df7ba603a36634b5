"""``rcdnet cv --by-source``: leave one source (hospital) out, every source in turn, over one or more seeds.

For each seed and each training source H of ``data.sources`` a complete training run is made on the other sources;
its epoch, temperature and operating points are chosen on ITS validation split (the other sources' images only),
and then every image of H, which it never saw, is scored once (an external scoring: in the ledger).

    out/seed{S}/without-{H}/   that training run (resumable like any run; split.csv lists every image it used)
    out/loso_predictions.csv   key, source, label, group, seed, p_malignant: each held-out image's probability
    out/loso_metrics.json      per source (per seed, seed mean / sd, seed ensemble), mean, worst source, targets
    out/loso.md                the same as a page

The held-out source's images are resampled by cluster (patient, duplicate group) for the intervals.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rcdnet.config import RunConfig, read_saved_config, save_config
from rcdnet.data.prepare import prepare_training_data
from rcdnet.data.sources import READERS
from rcdnet.data.split import load_split
from rcdnet.evaluation.calibration import expected_calibration_error
from rcdnet.evaluation.held_out import HeldOutScore
from rcdnet.files import markdown_table, write_csv, write_json
from rcdnet.pipeline import finder_on_external, fit_segmenter, run, ships_finder
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.runtime import environment

# the targets for every held-out source (docs/loso.md)
TARGETS = {"mean_auc": 0.90, "worst_auc": 0.85, "ece": 0.08, "rule_out_sensitivity": 0.95,
           "rule_out_specificity": 0.50, "seed_spread": 0.02}
# loso_predictions.csv (and the LOSO scripts' re-scorings of it): a row per held-out image and seed
PREDICTION_COLUMNS = ["key", "source", "label", "group", "seed", "p_malignant"]


def fold_dir(out: Path, seed: int, held_out: str) -> Path:
    return Path(out) / f"seed{seed}" / f"without-{held_out}"


def fold_config(cfg: RunConfig, held_out: str, seed: int) -> RunConfig:
    """The run that leaves ``held_out`` out: every other source trains (and validates) it, ``held_out`` is its only
    external set."""
    others = [s for s in cfg.data.sources if s != held_out]
    return cfg.updated({"seed": seed, "data": {"sources": others, "external": [held_out]}},
                       where=f"leave {held_out} out")


def check_sources(cfg: RunConfig) -> list[str]:
    sources = list(cfg.data.sources)
    unnamed = [s for s in sources if s not in READERS]
    if unnamed:
        raise ValueError(f"cv --by-source holds out named sources ({', '.join(READERS)}); {unnamed} is not one")
    if len(sources) < 3:
        raise ValueError(f"cv --by-source needs at least 3 training sources (two to train each fold); "
                         f"data.sources is {sources}")
    return sources


def leave_one_source_out(cfg: RunConfig, data_root: Path, out: Path, seeds: list[int] | None = None, *,
                         cache_dir: Path | None = None, progress: bool = True) -> dict:
    """Train every (seed, held-out source) fold that is not finished yet (an interrupted one resumes), then
    summarise (:func:`summarise`)."""
    sources = check_sources(cfg)
    seeds = list(seeds) if seeds else [cfg.seed]
    out = Path(out)
    for seed in seeds:
        for i, held in enumerate(sources):
            d = fold_dir(out, seed, held)
            if (d / f"{held}_metrics.json").is_file():
                if progress:
                    print(f"seed {seed}, without {held}: finished earlier, kept")
                if ships_finder(cfg) and "segmenter_external" not in json.loads((d / "metrics.json").read_text()):
                    add_finder(cfg, d, data_root, cache_dir, progress)
                continue
            if progress:
                print(f"seed {seed}, fold {i + 1}/{len(sources)}: train on {', '.join(s for s in sources if s != held)}"
                      f"; {held} held out")
            run(fold_config(cfg, held, seed), data_root, d, resume=(d / "checkpoints" / "last.pt").is_file(),
                cache_dir=cache_dir, progress=progress)
    return summarise(cfg, out, sources, seeds)


def add_finder(cfg: RunConfig, d: Path, data_root: Path, cache_dir: Path | None, progress: bool) -> None:
    """A finished fold ``d`` that has no lesion finder (trained with ``segment.epochs`` 0) gets one with ``cfg``'s
    ``segment`` settings, as its run would have made it: trained on the fold's own split (never the held-out source),
    its threshold chosen on the fold's validation split, then scored on the held-out source beside the fold's
    classifier's found-box AUC (in the ledger). The classifier and its predictions are left as they were."""
    fold = read_saved_config(d / "config.yaml").updated({"segment": dataclasses.asdict(cfg.segment)},
                                                         where=f"{d}: its lesion finder")
    if progress:
        print(f"{d}: training its lesion finder ({fold.segment.epochs} epochs)")
    split = {r["key"]: r["split"] for r in load_split(d / "split.csv")}
    data = prepare_training_data(fold, data_root, cache_dir=cache_dir, saved_split=split, progress=False)
    predictor = TorchPredictor(d / "checkpoints" / "best.pt")
    metrics = json.loads((d / "metrics.json").read_text())
    metrics["segmenter"] = fit_segmenter(fold, data, data_root, d, predictor,
                                         log=print if progress else lambda m: None)
    metrics["segmenter_external"] = finder_on_external(fold, data_root, d, predictor)
    save_config(fold, d / "config.yaml")  # the fold's settings now include the finder it ships
    write_json(d / "metrics.json", metrics)


def scored_again(fold: Path, out: Path, done: str, *how: str) -> Path:
    """``out``, holding what ``rcdnet evaluate FOLD *how --out OUT`` writes for a fold's model (``how``: for example
    ``--dataset udiat --tta``); run once, then kept while ``out/done`` exists (the LOSO scripts' re-scorings)."""
    if not (Path(out) / done).is_file():
        args = [sys.executable, "-m", "rcdnet", "evaluate", str(fold), *how, "--out", str(out), "--quiet"]
        print("$", " ".join(args), flush=True)
        subprocess.run(args, check=True)
    return Path(out)


def _read_fold(out: Path, seed: int, held: str) -> tuple[list[dict], dict]:
    d = fold_dir(out, seed, held)
    with open(d / f"{held}_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, json.loads((d / f"{held}_metrics.json").read_text())


def out_of_source_calibration(pooled: dict[str, tuple[np.ndarray, np.ndarray]], target: float,
                              method: str = "platt") -> dict:
    """Calibration and rule-out threshold that travel, measured without the held-out hospital's labels: for each
    source H, a ``method`` map and the threshold for ``target`` sensitivity are fitted on the OTHER sources' held-out
    predictions (``pooled``: source -> (y (N,), P (K, N))), then applied to H's. Per source: ECE, sensitivity and
    specificity at that threshold (means over seeds); ``all``: the map fitted on every source (to ship)."""
    from rcdnet.evaluation.metrics import binary_metrics
    from rcdnet.evaluation.site_validation import fit_site

    def fit(names):
        y = np.concatenate([np.tile(pooled[n][0], len(pooled[n][1])) for n in names])
        return fit_site(method, np.concatenate([pooled[n][1].ravel() for n in names]), y, target)

    per_source = {}
    for held, (y, P) in pooled.items():
        site = fit([n for n in pooled if n != held])
        t = site.thresholds["high_sensitivity"]
        ms = [binary_metrics(y, site.apply(p), t) for p in P]
        per_source[held] = {"ece": float(np.mean([expected_calibration_error(y, site.apply(p)) for p in P])),
                            "threshold": t, **{k: float(np.mean([m[k] for m in ms]))
                                               for k in ("sensitivity", "specificity")}}
    every = fit(list(pooled))
    every.provenance = {"cases_file": "loso_predictions.csv (every held-out prediction, every seed)",
                        "n_cases": int(sum(P.size for _, P in pooled.values())), "target_sensitivity": target}
    return {"method": method, "target_sensitivity": target, "sources": per_source, "all": every.to_dict()}


FINDER_KEYS = ("found", "box_iou_0.5", "dice", "no_lesion_on_normal", "auc_found_box", "auc_given_box",
               "diameter_error_mm_median")


def finder_summary(folds: list[Path], held: str) -> dict | None:
    """The folds' lesion finders on the held-out source (their runs' ``segmenter_external``), averaged over seeds;
    None where the folds trained none."""
    found = [json.loads((d / "metrics.json").read_text()).get("segmenter_external", {}).get(held) for d in folds]
    if not all(found):
        return None
    return {k: float(np.mean([f[k] for f in found])) for k in FINDER_KEYS if all(k in f for f in found)}


def _finder_lines(scores: dict[str, HeldOutScore]) -> list[str]:
    rows = [[h, *(_f(m.finder.get(k)) for k in FINDER_KEYS)] for h, m in scores.items() if m.finder]
    if not rows:
        return []
    return ["", "The lesion finder on the held-out hospital (each fold's own, its threshold chosen on the fold's "
            "validation split; means over seeds): share of lesion images with a lesion found, share whose best region's "
            "box overlaps the mask's (IoU >= 0.5), Dice, \"no lesion\" on normal images, the classifier's AUC on the "
            "found boxes and on the masks' boxes, median error of the longest diameter (mm, where the pixel size is "
            "known).", "",
            *markdown_table(["held out", "found", "box IoU >= 0.5", "Dice", "no lesion on normals", "AUC found box",
                             "AUC mask box", "diameter error mm"], rows)]


def summarise(cfg: RunConfig, out: Path, sources: list[str], seeds: list[int]) -> dict:
    """Pool the finished folds into ``loso_predictions.csv``, ``loso_metrics.json`` and ``loso.md``."""
    rows_out, per_source, pooled = [], {}, {}
    for held in sources:
        folds = [_read_fold(out, seed, held) for seed in seeds]
        keys = [r["key"] for r in folds[0][0]]
        for seed, (rows, _) in zip(seeds, folds):
            if [r["key"] for r in rows] != keys:
                raise ValueError(f"{held}: the seeds' folds scored different images (data changed between runs?)")
            rows_out += [{"key": r["key"], "source": held, "label": r["label"], "group": r["group"], "seed": seed,
                          "p_malignant": r["p_malignant"]} for r in rows]
        rows0 = folds[0][0]
        y = np.array([r["label"] == "malignant" for r in rows0], int)
        P = np.array([[float(r["p_malignant"]) for r in rows] for rows, _ in folds])
        per_source[held] = HeldOutScore.measure(y, P, np.array([r["group"] for r in rows0]), [m for _, m in folds],
                                                cfg.eval.bootstrap)
        pooled[held] = (y, P)
        if finder := finder_summary([fold_dir(out, seed, held) for seed in seeds], held):
            per_source[held] = dataclasses.replace(per_source[held], finder=finder)
    write_csv(out / "loso_predictions.csv", rows_out, PREDICTION_COLUMNS)
    by_seed = [float(np.mean([per_source[h].auc_per_seed[i] for h in sources])) for i in range(len(seeds))]
    worst = min(sources, key=lambda h: per_source[h].auc)
    summary = {"env": environment(), "seeds": seeds, "sources": {h: v.to_dict() for h, v in per_source.items()},
               "mean_auc": float(np.mean([per_source[h].auc for h in sources])),
               "worst_source": worst, "worst_auc": per_source[worst].auc,
               "mean_auc_per_seed": by_seed,
               "mean_auc_seed_sd": float(np.std(by_seed, ddof=1)) if len(seeds) > 1 else None,
               "ensemble_mean_auc": float(np.mean([per_source[h].ensemble_auc for h in sources])),
               "out_of_source": out_of_source_calibration(pooled, cfg.eval.target_sensitivity), "targets": TARGETS}
    write_json(out / "loso_metrics.json", summary)
    write_json(out / "out_of_source_calibration.json", summary["out_of_source"]["all"])
    (out / "loso.md").write_text(markdown(summary))
    return summary


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown(s: dict) -> str:
    env, seeds = s["env"], s["seeds"]
    scores = {h: HeldOutScore.from_dict(m) for h, m in s["sources"].items()}
    rows = []
    for h, m in scores.items():
        rows.append([h, f"{m.n} ({m.n_malignant} mal., {m.clusters} clusters)",
                     f"{m.auc:.3f} [{m.auc_ci[0]:.3f}, {m.auc_ci[1]:.3f}]",
                     " / ".join(f"{a:.3f}" for a in m.auc_per_seed), _f(m.ensemble_auc) + (
                         f" [{m.ensemble_auc_ci[0]:.3f}, {m.ensemble_auc_ci[1]:.3f}]" if len(seeds) > 1 else ""),
                     f"{_f(m.ece_before_temperature)} → {_f(m.ece)}",
                     f"{_f(m.high_sensitivity_sensitivity)} / {_f(m.high_sensitivity_specificity)}",
                     f"{_f(m.default_sensitivity)} / {_f(m.default_specificity)}"])
    sd = s["mean_auc_seed_sd"]
    rows.append(["**mean**", "", f"**{s['mean_auc']:.3f}**", " / ".join(f"{a:.3f}" for a in s["mean_auc_per_seed"])
                 + (f" (sd {sd:.3f})" if sd is not None else ""), _f(s["ensemble_mean_auc"]), "", "", ""])
    t = s["targets"]
    lines = [f"# Leave one source out ({len(s['sources'])} sources, seed{'s' if len(seeds) > 1 else ''} "
             f"{', '.join(map(str, seeds))})", "",
             f"commit `{env['commit']}`, {env['date']}, {env['hardware']}", "",
             "Each row: the models trained on every other source (one per seed), scored on every image of the held-out "
             "source; epoch, temperature and both operating points chosen on the other sources' validation split. AUC: "
             "mean over seeds, 95 % interval from resampling the held-out clusters (patients, duplicate groups). "
             "Ensemble: the seeds' mean probability. ECE: before → after the temperature fitted in-fold. Rule-out: "
             "the high-sensitivity point (chosen for 95 % sensitivity on the fold's validation split).", "",
             *markdown_table(["held out", "images", "AUC [95% CI]", "AUC per seed", "seed ensemble AUC", "ECE",
                              "rule-out sens / spec", "p >= default sens / spec"], rows), "",
             f"Worst source: **{s['worst_source']}** (AUC {s['worst_auc']:.3f}). Targets: mean AUC >= "
             f"{t['mean_auc']}, every source >= {t['worst_auc']}, ECE <= {t['ece']}, rule-out sensitivity >= "
             f"{t['rule_out_sensitivity']} with specificity >= {t['rule_out_specificity']}, seed spread <= "
             f"{t['seed_spread']}."]
    oos = s["out_of_source"]
    lines += ["", f"Calibration that travels: for each held-out hospital a {oos['method']} map and a rule-out threshold "
              f"(for {oos['target_sensitivity']:.0%} sensitivity) fitted on the OTHER hospitals' held-out predictions "
              "(never its own labels), then applied to it; beside the fold's own (temperature and threshold chosen on "
              "its in-source validation split). `out_of_source_calibration.json`: the map fitted on every hospital. "
              "Mean p: the seeds' mean probability averaged over the hospital's images, beside its malignant share "
              "(calibration in the large: above it, the model overcalls there; below, it undercalls).", "",
              *markdown_table(["held out", "mean p / malignant share", "ECE of the seeds' mean", "ECE in-fold",
                               "ECE out-of-source map", "rule-out sens / spec in-fold",
                               "rule-out sens / spec out-of-source"],
                              [[h, f"{_f(m.ensemble_mean_p)} / {_f(m.malignant_share)}", _f(m.ensemble_ece),
                                _f(m.ece), _f(oos["sources"][h]["ece"]),
                                f"{_f(m.high_sensitivity_sensitivity)} / {_f(m.high_sensitivity_specificity)}",
                                f"{_f(oos['sources'][h]['sensitivity'])} / {_f(oos['sources'][h]['specificity'])}"]
                               for h, m in scores.items()])]
    return "\n".join(lines + _finder_lines(scores)) + "\n"

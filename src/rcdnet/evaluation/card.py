"""The model card of a finished run (in the spirit of TRIPOD+AI and CLAIM), generated from what the run saved:
``metrics.json``, ``config.yaml``, ``split.csv`` and the per-image predictions, plus subgroup analyses computed
here from those predictions (UDIAT by diagnosis, images with and without overlays) and one image that is not
breast ultrasound. Nothing is re-scored: every number is the run's own or derived from its prediction files."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from rcdnet.config import load_config
from rcdnet.data.samples import Sample
from rcdnet.data.sources import SOURCE_INFO, load_dataset
from rcdnet.evaluation.held_out import HeldOutScore
from rcdnet.evaluation.ledger import sentence
from rcdnet.evaluation.report import evaluations
from rcdnet.runtime import environment
from rcdnet.evaluation.robustness import overlay_analysis
from rcdnet.files import markdown_table

INTENDED_USE = """\
- **What it is for**: a second reader for a breast lesion on B-mode ultrasound: given one image of that lesion
  (with its box, or without: its lesion finder outlines and measures the lesion, or says none was found), it gives
  a probability of malignancy, a benign / malignant call at two operating points, and a heat map of the pixels
  behind the call.
- **Who uses it**: clinicians, with the ML engineers who validate it at their site first (see the last section).
- **Research software, not a medical device.** It is not cleared or approved for clinical use; it must not replace
  a radiologist's reading, biopsy decisions or BI-RADS assessment.
- **Not for**: screening images without a lesion (normal scans were excluded from the classifier's training; the
  lesion finder's "no lesion found" is a safeguard measured below, not a screening test); Doppler-only, elastography or non-breast images; patients or scanners unlike the
  training sources below without a site validation."""


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _rate(k: int, n: int) -> str:
    ci = binomtest(k, n).proportion_ci(method="wilson") if n else None
    return f"{k}/{n} = {k / n:.2f} [{ci.low:.2f}, {ci.high:.2f}]" if n else "–"


def training_data(run_dir: Path, cfg, metrics: dict) -> list[str]:
    """Sources with site, scanner and the run's image counts per split and class (from split.csv)."""
    split = _rows(run_dir / "split.csv")
    count = Counter((r["key"].split("/", 1)[0], r["split"], r["label"]) for r in split)
    rows = [[src, SOURCE_INFO.get(src, {}).get("site", "a user's own data"), SOURCE_INFO.get(src, {}).get("scanner", "–"),
             *(f"{count[(src, part, 'benign')]} / {count[(src, part, 'malignant')]}" for part in ("train", "val"))]
            for src in cfg.data.sources]
    data = metrics["data"]
    return [*markdown_table(["source", "site", "scanner", "train (benign / malignant)", "validation (b / m)"], rows), "",
            f"- Exclusions: BUSI's normal images (no lesion); label-conflict groups (the same image filed under both "
            f"classes): {data['label conflicts left out'].split(':')[0]}; unreadable files: "
            f"{data['files reported as problems'].split(' ')[0]}.",
            f"- Duplicates: {data['duplicate groups in the pool']}; the split keeps each duplicate and patient group "
            "on one side (what the intervals resample is in the last column of the table below).",
            f"- Input: {cfg.data.image_size} px grey, "
            f"{'non-local-means denoising and ' if cfg.data.denoise_h > 0 else ''}CLAHE, "
            f"{'letterboxed' if cfg.data.letterbox else 'resized'}; model `{cfg.model.name}` "
            f"({'ImageNet-pretrained' if cfg.model.pretrained else 'trained from scratch'}), "
            f"mirror TTA {cfg.eval.tta}"
            + (f"; the mean of {cfg.train.members} such models' probabilities (seeds {cfg.seed}-"
               f"{cfg.seed + cfg.train.members - 1}, {'up to ' if cfg.train.patience else ''}{cfg.train.epochs} epochs each"
               + (f", stopping after {cfg.train.patience} without improvement" if cfg.train.patience else "") + ")."
               if cfg.train.members > 1 else ".")]


def operating_points(metrics: dict) -> list[str]:
    """Each operating point and what it achieved on every evaluated set, with intervals."""
    t = metrics["thresholds"]
    lines = [f"- `default`: p(malignant) >= {t['default']:.2f}; `high_sensitivity` (\"rule-out\"): p >= "
             f"{t['high_sensitivity']:.4f}, chosen on the validation split for sensitivity >= 0.95 there.", ""]
    rows = []
    results = evaluations(metrics["results"])
    for name, r in results.items():
        for op in t:
            m = r.at(op)
            rows.append([name, op, r.n, str(m["sensitivity"]), str(m["specificity"]), str(m["auc"]), r.ci_resampling])
    lines += markdown_table(["set", "operating point", "n", "sensitivity", "specificity", "AUC", "95 % CI resamples"],
                            rows)
    first = next(iter(results))
    for name, r in list(results.items())[1:]:
        s = r.at("high_sensitivity")["sensitivity"].value
        lines += ["", f"- **Rule-out on {name}**: the threshold chosen for 95 % sensitivity on {first} caught "
                      f"{s:.2f} of {name}'s cancers. Do not use it to rule out at a new site without a site "
                      "validation."]
    lines += ["", f"- {first} cells at `high_sensitivity` are in-sample (that split chose the threshold, the "
                  "temperature and the best epoch)."]
    return lines


def by_diagnosis(run_dir: Path, name: str, data_root, thresholds: dict) -> list[str]:
    """Per diagnosis: how many were called malignant at each operating point (Wilson 95 % intervals)."""
    samples, _ = load_dataset(name, data_root)
    diag = {s.key: s.extra.get("diagnosis") or "unknown" for s in samples}
    rows = _rows(run_dir / f"{name}_predictions.csv")
    table = []
    for d in sorted({diag.get(r["key"], "unknown") for r in rows}):
        mine = [r for r in rows if diag.get(r["key"], "unknown") == d]
        label = mine[0]["label"]
        cells = [_rate(sum(float(r["p_malignant"]) >= thresholds[op] for r in mine), len(mine)) for op in thresholds]
        table.append([d, label, len(mine), *cells])
    return ["Share called malignant (for malignant diagnoses this is the sensitivity, for benign ones one minus "
            "the specificity); Wilson 95 % intervals, images as units:", "",
            *markdown_table(["diagnosis", "class", "n", *(f"called malignant @{op}" for op in thresholds)], table)]


def overlays(run_dir: Path, metrics: dict) -> list[str]:
    """AUC on images with and without overlays (calipers, text, colour) per evaluated set, from its predictions."""
    rows = []
    for name in metrics["results"]:
        preds = _rows(run_dir / f"{name}_predictions.csv")
        samples = [Sample(path=Path(r["path"]), label=r["label"], key=r["key"], source=r["key"].split("/", 1)[0])
                   for r in preds]
        o = overlay_analysis(None, samples, np.array([float(r["p_malignant"]) for r in preds]))
        rows.append([name, f"{o['n_with']} ({o['per_class']['benign']['with_any']} benign, "
                           f"{o['per_class']['malignant']['with_any']} malignant)", f"{o['auc_with_overlays']:.3f}",
                     o["n_without"], f"{o['auc_without_overlays']:.3f}"])
    return markdown_table(["set", "images with overlays", "AUC with", "images without", "AUC without"], rows)


def not_ultrasound(run_dir: Path) -> str:
    """What the model says of a CT slice (pydicom-data's CT_small.dcm): it has no 'not ultrasound' answer."""
    from pydicom.data import get_testdata_file

    from rcdnet.data.decode import read_frames
    from rcdnet.predict import load_predictor

    path = get_testdata_file("CT_small.dcm")
    model = load_predictor(run_dir / "checkpoints" / "best.pt")
    rgb = next(read_frames(path)).rgb
    h, w = rgb.shape[:2]
    roi = model.preprocessor.roi  # a region-of-interest model: a box marked on the slice's centre half
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4) if roi else None
    p = float(model.predict_arrays(model.preprocessor(rgb, box)[None])[0, model.malignant_index])
    return (f"- **An image that is not breast ultrasound still gets an answer**: a {w} x {h} CT slice "
            f"(pydicom-data `CT_small.dcm`{f', box {box} marked on it' if roi else ''}) gets p(malignant) = {p:.3f}, called "
            f"{'malignant' if p >= 0.5 else 'benign'} at the default point. Nothing checks that an input is breast "
            "ultrasound.")


def calibration(metrics: dict) -> list[str]:
    first = next(iter(metrics["results"]))
    return [f"- {n}: expected calibration error {r['ece_before_temperature']:.3f} before and {r['ece']:.3f} after "
            f"temperature scaling (T = {r['temperature']:.3f}, fitted on {first}"
            + ("; in-sample)" if n == first else ")") for n, r in metrics["results"].items()] + [
        "- Probabilities are calibrated to the development hospital's validation split; at another hospital they "
        "can be far off (a higher ECE after scaling than before means the scaling does not transfer): recalibrate "
        "there (`rcdnet site-validate`)."]


def lesion_finder(metrics: dict) -> list[str]:
    """The shipped segmenter's validation numbers and, where the run had external sets, its numbers there."""
    from rcdnet.evaluation.finder import markdown

    lines = markdown(metrics["segmenter"], title=None)
    for name, v in metrics.get("segmenter_external", {}).items():
        lines += ["", f"On {name} (external):", "", *markdown(v, title=None, chose_threshold=False)]
    return lines


def held_out_hospitals(loso_dir: Path | None) -> list[str]:
    """The leave-one-source-out table of ``rcdnet cv --by-source`` (its ``loso_metrics.json``), or a line saying it
    has not been run."""
    f = Path(loso_dir) / "loso_metrics.json" if loso_dir else None
    if f is None or not f.is_file():
        return ["Not measured for this card (`rcdnet card RUN --loso LOSO_DIR` adds the table of "
                "`rcdnet cv --by-source`; docs/loso.md)."]
    s = json.loads(f.read_text())
    env, seeds = s["env"], s["seeds"]
    out = [f"From `{loso_dir}` (`rcdnet cv --by-source`, commit `{env['commit']}`, {env['date']}, {env['hardware']}; "
           f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}): for each hospital, the same recipe "
           "trained on the other hospitals, its epoch, temperature and thresholds chosen without it, scored on every "
           "image of it.", ""]
    several = len(seeds) > 1  # then the seeds' mean probability is the shipped kind of model (a seed ensemble)
    for h, d in s["sources"].items():
        m = HeldOutScore.from_dict(d)
        ens = (f"the seeds' mean probability: AUC {m.ensemble_auc:.3f} [{m.ensemble_auc_ci[0]:.3f}, "
               f"{m.ensemble_auc_ci[1]:.3f}], calibration error {m.ensemble_ece:.3f}"
               + (f", mean p {m.ensemble_mean_p:.3f} for a malignant share of {m.malignant_share:.3f}"
                  if m.ensemble_mean_p is not None else "") + "; each seed alone (mean): " if several else "")
        out.append(f"- {h} ({m.n} images, {m.n_malignant} malignant): {ens}AUC {m.auc:.3f} [{m.auc_ci[0]:.3f}, "
                   f"{m.auc_ci[1]:.3f}], calibration error {m.ece:.3f}; at the rule-out point sensitivity "
                   f"{m.high_sensitivity_sensitivity:.3f}, specificity {m.high_sensitivity_specificity:.3f}")
    out.append(f"- mean over hospitals: AUC {s['mean_auc']:.3f}" + (
        f" (each seed alone), {s['ensemble_mean_auc']:.3f} (the seeds' mean probability)" if several else "")
        + f"; worst: {s['worst_source']} ({s['worst_auc']:.3f})")
    return out


def model_card(run_dir: str | Path, data_root: str | Path | None = None, loso_dir: str | Path | None = None) -> str:
    """The model card of the run in ``run_dir`` as Markdown (with the leave-one-source-out table of ``loso_dir``)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = load_config(run_dir / "config.yaml")
    env, now = metrics["env"], environment()
    external = [n for n in metrics["results"]][1:]
    lines = ["# Model card: RcdNet, benign vs malignant breast lesions in ultrasound", "",
             f"Generated by `rcdnet card {run_dir}` from that run's saved results (trained at commit "
             f"`{env['commit']}`, {env['date']}, {env['hardware']}); card written at commit `{now['commit']}`, "
             f"{now['date']}. Every number below is the run's own or computed from its prediction files.", "",
             "## Intended use", "", INTENDED_USE, "",
             "## Training data", "", *training_data(run_dir, cfg, metrics), "",
             "## At hospitals it never saw (leave one source out)", "", *held_out_hospitals(loso_dir), "",
             "## External test data", ""]
    if not external:
        lines.append("None in this run: every public source trains it. Its external scorings (a hidden set) are in "
                     "docs/decisions.md.")
    for name in external:
        info = SOURCE_INFO.get(name, {})
        r = metrics["results"][name]
        lines.append(f"- {name}: {r['n']} images ({r['n_malignant']} malignant), {info.get('site', 'a user set')}, "
                     f"{info.get('scanner', '')}. " + (sentence(name, r["external_scorings"]) if "external_scorings" in r
                                                       else "Scored before the ledger of external scorings began; "
                                                            "docs/decisions.md counts its history") + ".")
    lines += ["", "## Operating points and what they achieved", "", *operating_points(metrics), "",
              "## Subgroups", ""]
    for name in external:
        if name == "udiat":
            lines += [f"### {name} by diagnosis", "", *by_diagnosis(run_dir, name, data_root, metrics["thresholds"]),
                      ""]
    lines += ["### Images with and without overlays (calipers, text, colour), as detected by `rcdnet.data.overlays`",
              "", *overlays(run_dir, metrics), ""]
    for name, r in evaluations(metrics["results"]).items():
        if r.by_source:
            lines += [f"### {name} per source", ""] + [
                f"- {src}: n = {m.n}, AUC {m.auc}, sensitivity at `high_sensitivity` "
                f"{m.at('high_sensitivity')['sensitivity']}" for src, m in r.by_source.items()] + [""]
    if "segmenter" in metrics:
        lines += ["## The lesion finder (automatic mode)", "", *lesion_finder(metrics), ""]
    lines += ["## Calibration", "", *calibration(metrics), "",
              "## Known failure modes", "", not_ultrasound(run_dir),
              "- **Another hospital, another answer**: discrimination and, above all, sensitivity at a fixed threshold "
              "fall on a hospital the model never saw (the table above); a threshold chosen at home does not carry "
              "its sensitivity abroad.",
              "- **Shortcuts**: calipers, text and colour boxes differ between classes in the training data; the "
              "overlay table above shows how the model does with and without them.",
              "- **Normal scans and several lesions**: the classifier has no 'no lesion' class; the lesion finder says "
              "'no lesion found' below its threshold (how often on normal images: the section above), and classifies "
              "each lesion it finds separately; a wrong region it finds is classified like a lesion.", "",
              "## Before use at a new site", "",
              "First adapt it to the site's own lesion images, no labels needed (at least 50; the model's batch-norm "
              "statistics are re-estimated on them): `rcdnet adapt MODEL FOLDER`. At the four public hospitals, each "
              "left out in turn, this lowered the ensemble's calibration error at three of four and kept its AUC "
              "(docs/loso.md, step 15). Then score the adapted model on the site's own labelled cases (at least about 40: the learning curve in "
              "docs/site_validation.md) with `rcdnet site-validate MODEL --csv cases.csv --target-sensitivity 0.95`: it reports the "
              "model's AUC there, what the development site's operating points achieve, a recalibration and a local "
              "threshold chosen by cross-validation, and writes a model file carrying them (docs/site_validation.md)."]
    return "\n".join(lines) + "\n"

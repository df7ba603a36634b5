"""``report.md``: the run's results beside the paper's RcdNet rows (Tables 1 and 2)."""

from __future__ import annotations

from pathlib import Path

from rcdnet.config import RunConfig
from rcdnet.data.inputs import VALIDATION
from rcdnet.evaluation.ledger import sentence
from rcdnet.evaluation.paper import rcdnet_row
from rcdnet.evaluation.results import Evaluation, Metric
from rcdnet.files import markdown_table
from rcdnet.runtime import environment

ROWS = [("accuracy", "Accuracy", "accuracy"), ("precision_macro", "Precision (macro)", "precision"),
        ("recall_macro", "Recall (macro)", "recall"), ("f1_macro", "F1 (macro)", "f1"),
        ("precision", "Precision (malignant)", None), ("sensitivity", "Sensitivity / recall (malignant)", None),
        ("specificity", "Specificity", None), ("f1", "F1 (malignant)", None), ("auc", "AUC", "auc")]


def fmt_metric(m: dict) -> str:
    """{"value": v, "ci": [lo, hi]} -> 'v [lo, hi]' ('undefined' where a one-class set has no value)."""
    return str(Metric.from_dict(m))


def evaluations(results: dict[str, dict]) -> dict[str, Evaluation]:
    """Saved or fresh results (name -> dict) as :class:`Evaluation` objects."""
    return {n: r if isinstance(r, Evaluation) else Evaluation.from_dict(r, n) for n, r in results.items()}


def metrics_table(results: dict[str, Evaluation], op: str, paper_of: dict[str, str] | None = None,
                  in_sample: str | None = None) -> str:
    """Our metrics at ``op`` beside the paper's (``paper_of``: result name -> the paper's test set, where they are
    like with like). The column of ``in_sample`` (the set that chose this operating point) says so in its header."""
    names = list(results)
    paper_of = paper_of or {}
    header = ["Metric"] + [f"{n} ({who}{', in-sample' if who == 'ours' and n == in_sample else ''})"
                           for n in names for who in ("ours", "paper")]
    rows = []
    for key, label, paper_key in ROWS:
        cells = []
        for n in names:
            paper = rcdnet_row(paper_of.get(n, n)).get(paper_key) if paper_key else None
            cells += [str(results[n].at(op)[key]), f"{paper:.4f}" if paper is not None else "–"]
        rows.append([label] + cells)
    counts = " · ".join(f"{n}: " + ", ".join(f"{k.upper()} {r.at(op).counts[k]}" for k in ("tp", "fp", "tn", "fn"))
                        for n, r in results.items())
    return "\n".join(markdown_table(header, rows)) + f"\n\nConfusion counts: {counts}\n"


def data_summary(data) -> dict:
    """The report's data section from a :class:`~rcdnet.data.prepare.PreparedData`."""
    tr, va = data.subset("train")[0], data.subset("val")[0]
    labels = sorted({s.label for s in data.samples})
    sources = list(dict.fromkeys(s.source for s in data.samples))

    def count(ss):
        return ", ".join(f"{c} {sum(s.label == c for s in ss)}" for c in labels)

    groups: dict = {}
    for s in data.samples:
        groups.setdefault(s.group, []).append(s.key)
    multi = [g for g in groups.values() if len(g) > 1]
    training = {s.key for s in data.samples} | {s.key for m in data.conflicts.values() for s in m}
    ext_pairs = [p for p in data.pairs if p.a not in training and p.b not in training]
    per_source = {}
    for src in sources if len(sources) > 1 else []:
        mine_tr, mine_va = ([s for s in part if s.source == src] for part in (tr, va))
        per_source[f"source {src}"] = (f"train {len(mine_tr)} ({count(mine_tr)}) / validation {len(mine_va)} "
                                       f"({count(mine_va)})")
    return {
        "training pool": f"{len(data.samples)} images ({count(data.samples)}) from {', '.join(sources)}",
        "train / validation": f"{len(tr)} ({count(tr)}) / {len(va)} ({count(va)}), stratified by source and class, "
                              "no duplicate or patient group across",
        **per_source,
        "duplicate groups in the pool": f"{len(multi)} groups holding {sum(map(len, multi))} images",
        "label conflicts left out": f"{len(data.conflicts)} groups: " + "; ".join(
            " = ".join(s.key for s in m) for m in data.conflicts.values()),
        "pool / external-set overlap": f"{len(data.external_overlap)} pairs",
        "duplicate pairs inside external sets": f"{len(ext_pairs)}: " + "; ".join(
            f"{p.a} = {p.b} ({p.kind})" for p in ext_pairs),
        "files reported as problems": f"{len(data.problems)} (see data_problems.csv)",
    }


def per_source_table(results: dict[str, Evaluation], op: str) -> list[str]:
    """Lines of a table of each multi-source result's metrics per source at ``op`` (none if no result has them)."""
    rows = [[f"{n}: {src}", str(r.n), str(r.n_malignant)]
            + [str(r.at(op)[k]) for k in ("auc", "sensitivity", "specificity", "accuracy")]
            for n, res in results.items() for src, r in res.by_source.items()]
    if not rows:
        return []
    return ["", "Per source (each computed on that source's images alone, at the same threshold):", "",
            *markdown_table(["set: source", "n", "malignant", "AUC", "sensitivity", "specificity", "accuracy"], rows)]


def _input_mode(cfg: RunConfig) -> str:
    if not cfg.data.roi:
        return "the whole image"
    aug = cfg.augment
    jitter = (f"; {aug.ultrasound_variants} {'shifted ' if aug.ultrasound_level else ''}copies cut around boxes "
              f"jittered by {aug.box_jitter:g}" if aug.ultrasound_variants else "")
    return f"the square around the lesion box (ROI margin {cfg.data.roi_margin:g}; boxes from the masks{jitter})"


def _dedup_from_predictions(run_dir: Path, val: str, threshold: float, n_boot: int) -> dict:
    """The validation split with each duplicate group reduced to its first image (by key), from the run's saved
    predictions and split.csv's groups: nothing re-scored."""
    import csv

    from rcdnet.evaluation.metrics import metrics_with_ci

    with open(run_dir / "split.csv", newline="") as f:
        group = {r["key"]: r.get("group") or r["key"] for r in csv.DictReader(f)}
    with open(run_dir / f"{val}_predictions.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["key"])
    first = {}
    for r in rows:
        first.setdefault(group.get(r["key"], r["key"]), r)
    kept = list(first.values())
    y = [int(r["label"] == "malignant") for r in kept]
    m = metrics_with_ci(y, [float(r["p_malignant"]) for r in kept], threshold, n_boot)
    return {f"{val} with each duplicate group reduced to one image (from the saved predictions)":
            {"n": len(kept), "operating_points": {"default": m}}}


def render_report(run_dir: Path) -> Path:
    """Write ``report.md`` again from what a finished run saved (config.yaml, history.json, metrics.json), with
    today's wording and nothing re-scored; the header names the commit that rendered it. Returns its path."""
    import json

    from rcdnet.config import load_config

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg, rendered, extra = load_config(run_dir / "config.yaml"), environment(), metrics.get("sensitivity", {})
    val = next(iter(metrics["results"]))
    if not any(k.startswith(f"{val} with each duplicate group") for k in extra):  # a run from before it was scored
        extra = {**_dedup_from_predictions(run_dir, val, metrics["thresholds"]["default"], cfg.eval.bootstrap),
                 **extra}
    write_report(run_dir / "report.md", cfg=cfg, env=metrics["env"],
                 data_summary=metrics["data"], history=json.loads((run_dir / "history.json").read_text()),
                 best=metrics["best"], thresholds=metrics["thresholds"], results=metrics["results"],
                 extra_results=extra, segmenter=metrics.get("segmenter"),
                 rendered=f"report rendered again from the run's saved results at commit `{rendered['commit']}`, "
                          f"{rendered['date']} (nothing re-scored)")
    return run_dir / "report.md"


def _sensitivity_lines(extra_results: dict[str, Evaluation]) -> list[str]:
    if not extra_results:
        return []
    lines = ["", "## Sensitivity analyses", ""]
    for name, r in extra_results.items():
        d = r.at("default")
        lines.append(f"- {name} (n={r.n}): AUC {d['auc']}, accuracy {d['accuracy']}, sensitivity {d['sensitivity']}, "
                     f"specificity {d['specificity']}")
    return lines


def _epochs(epoch: int | list[int]) -> str:
    """The best epoch, or each member's (a seed ensemble)."""
    return ", ".join(f"{e} (member {k + 1})" for k, e in enumerate(epoch)) if isinstance(epoch, list) else str(epoch)


def _recipe(cfg: RunConfig) -> str:
    """The model and how it was trained, in one line."""
    tr = cfg.train
    return (f"model `{cfg.model.name}` (pretrained: {cfg.model.pretrained}, frozen stages: {cfg.model.freeze_stages}), "
            f"{tr.epochs} epochs{f' (stopping after {tr.patience} without improvement)' if tr.patience else ''}, "
            f"batch {tr.batch_size}, Adam lr {tr.lr}, weight decay {tr.weight_decay}, cosine annealing, label smoothing "
            f"{cfg.augment.label_smoothing}, Mixup alpha {cfg.augment.mixup_alpha}, seed {cfg.seed}"
            + (f"; a seed ensemble of {tr.members} such models (seeds {cfg.seed}-{cfg.seed + tr.members - 1}, the mean "
               "of their probabilities)" if tr.members > 1 else ""))


def write_report(path: Path, *, cfg: RunConfig, env: dict, data_summary: dict, history: list[dict], best: dict,
                 thresholds: dict, results: dict[str, dict | Evaluation], extra_results: dict[str, dict | Evaluation],
                 rendered: str | None = None, segmenter: dict | None = None) -> None:
    results, extra_results = evaluations(results), evaluations(extra_results)
    paper_of = {VALIDATION: "busi-val"} if cfg.data.sources == ("busi",) else {}  # the paper's like-with-like rows
    val = next(iter(results))  # the validation split comes first (named busi-val by runs before 2026-11-23)
    tot = sum(h["epoch_seconds"] for h in history)
    per_epoch = tot / max(len(history), 1)
    lines = [
        "# RcdNet run report", "",
        f"- commit `{env['commit']}`, {env['date']}, {env['hardware']}, Python {env['python']}, torch {env['torch']}",
        *([f"- {rendered}"] if rendered else []),
        f"- threads and memory: {env.get('threads', 'not recorded')}",
        f"- {_recipe(cfg)}",
        f"- input: {_input_mode(cfg)}, {cfg.data.image_size} px; training sources {', '.join(cfg.data.sources)}",
        f"- generalisation options: ultrasound-shift variants {cfg.augment.ultrasound_variants}, "
        f"overlay inpainting {cfg.data.inpaint_overlays}, letterbox {cfg.data.letterbox}, "
        f"EMA {cfg.train.ema_decay:g}, SWA from epoch {cfg.train.swa_start or 'off'}, "
        f"test-time mirror TTA {cfg.eval.tta}, AdaBN on external sets {cfg.eval.adabn}",
        f"- training time: {tot / 60:.1f} min in all, {per_epoch:.1f} s per epoch (train + validation); "
        f"peak memory {max((h['peak_memory_mb'] for h in history), default=0):.0f} MB",
        f"- best epoch by validation {best.get('name', 'auc')}: {_epochs(best['epoch'])}. The validation split made three "
        "decisions in this run (the best epoch, the temperature, the high-sensitivity threshold), so its numbers are "
        "optimistic and the cells that depend on those choices are marked in-sample. Within this run no external set "
        "was read before it was scored; how the configuration itself was chosen, on what, and which external "
        "numbers had been seen by then is in docs/decisions.md",
        "", "## Data", "",
    ]
    lines += [f"- {k}: {v}" for k, v in data_summary.items()]
    lines += ["", "## Operating points (chosen on validation only)", ""]
    lines += [f"- `{op}`: p(malignant) >= {t:.4f}" for op, t in thresholds.items()]
    for op in thresholds:
        lines += ["", f"## Results at the `{op}` operating point", "",
                  "95 % percentile-bootstrap confidence intervals in brackets, from "
                  f"{cfg.eval.bootstrap} resamples of "
                  + "; ".join(f"{n}: {r.ci_resampling}" for n, r in results.items())
                  + ". The paper reports one number per cell "
                  "(no intervals); its tables appear to average precision/recall/F1 over both classes (macro). "
                  f"Sensitivity and specificity at `high_sensitivity` on {val} are in-sample: its threshold "
                  "was chosen on those very images.", "",
                  metrics_table(results, op, paper_of, in_sample=val if op != "default" else None)]
        lines += per_source_table(results, op)
    lines += ["", "## Calibration (expected calibration error, 10 bins)", ""]
    lines += [f"- {n}: ECE {r.ece_before_temperature:.3f} before, {r.ece:.3f} after temperature scaling "
              f"(T = {r.temperature:.3f}, fitted on validation"
              + ("; in-sample: fitted on these very images)" if n == val else ")") for n, r in results.items()]
    scored = [sentence(n, r.scorings) if r.scorings is not None else
              f"{n}: scored before the ledger of external scorings began (2026-11-23); docs/decisions.md counts the "
              "scorings of that time" for n, r in results.items() if n != val]
    if scored:
        lines += ["", "## How often each external set had been scored", ""] + [f"- {h}" for h in scored]
    lines += _sensitivity_lines(extra_results)
    if segmenter:
        from rcdnet.evaluation.finder import markdown

        lines += ["", *markdown(segmenter)]
    lines += ["", "## Figures", "", "![loss](loss_curve.png) ![accuracy](accuracy_curve.png)", "",
              "![ROC](roc.png) ![reliability](reliability.png)", ""]
    lines += [f"![{n} confusion]({n}_confusion.png)" for n in results]
    path.write_text("\n".join(lines) + "\n")

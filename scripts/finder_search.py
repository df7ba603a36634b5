"""Compare lesion-finder recipes at hospitals they never saw (the rule: docs/loso.md, "Choosing the finder").

    python scripts/finder_search.py run NAME        # runs/loso/roi/seed0 folds -> runs/loso_finder/NAME
    python scripts/finder_search.py versus DEFAULT CANDIDATE

`run` copies each finished fold of `runs/loso/roi/seed0` (its classifier, split and settings; never its held-out
hospital) to `runs/loso_finder/NAME/without-H` and gives it the finder NAME names in CANDIDATES, trained and
thresholded on the fold's own split exactly as `rcdnet cv --by-source` would (`rcdnet.loso.add_finder`), then scored
on every image of H: `H_finder.csv` holds each image's numbers. `default` keeps the fold's own finder (today's
settings, trained earlier) and only scores it again, to get those per-image rows.

`versus` reads both recipes' per-image rows: per held-out source the share of lesion images whose found box matches
the mask's (IoU >= 0.5), Dice, found, "no lesion" on normal images and the classifier's AUC on found boxes; the mean
over sources of the IoU >= 0.5 share with a 95 % interval of (CANDIDATE - DEFAULT), paired, resampling each source's
patients / duplicate groups (2000 draws); and the decision of the rule.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

FOLDS = Path("runs/loso/roi/seed0")
ROOT = Path("runs/loso_finder")
SOURCES = ["busi", "bus-uclm", "breast", "udiat"]
DICE_MARGIN = 0.02
# segment settings over the packaged defaults; fixed before any of them ran (docs/loso.md)
CANDIDATES = {"default": {}, "finder224": {"image_size": 224, "epochs": 8}}


def run(name: str) -> None:
    from rcdnet.config import load_config, read_saved_config
    from rcdnet.data.readers import resolve_data_root
    from rcdnet.files import write_json
    from rcdnet.loso import add_finder
    from rcdnet.pipeline import finder_on_external
    from rcdnet.predict.pytorch import TorchPredictor
    from rcdnet.segment.model import FILE

    if name not in CANDIDATES:
        sys.exit(f"no finder candidate {name!r}: one of {', '.join(CANDIDATES)}")
    data, cfg = resolve_data_root(), load_config(overrides={"segment": CANDIDATES[name]})
    for held in SOURCES:
        src, dst = FOLDS / f"without-{held}", ROOT / name / f"without-{held}"
        if (dst / f"{held}_finder.csv").is_file():
            print(f"{dst}: finished earlier, kept")
            continue
        if not (src / f"{held}_metrics.json").is_file():
            sys.exit(f"{src}: not a finished fold (first: rcdnet cv --by-source --seeds 0 --config roi --out "
                     f"{FOLDS.parent} with the four sources, as docs/loso.md shows)")
        (dst / "checkpoints").mkdir(parents=True, exist_ok=True)
        for f in ("config.yaml", "split.csv", "checkpoints/best.pt") + (("checkpoints/" + FILE,) if name == "default"
                                                                         else ()):
            shutil.copy2(src / f, dst / f)
        metrics = json.loads((src / "metrics.json").read_text())
        if name == "default":
            fold = read_saved_config(dst / "config.yaml")
            metrics["segmenter_external"] = finder_on_external(fold, data, dst, TorchPredictor(dst / "checkpoints" /
                                                                                             "best.pt"))
            write_json(dst / "metrics.json", metrics)
        else:
            write_json(dst / "metrics.json", {k: v for k, v in metrics.items() if not k.startswith("segmenter")})
            add_finder(cfg, dst, data, None, progress=True)
        print(f"{dst}: {json.dumps(json.loads((dst / 'metrics.json').read_text())['segmenter_external'][held])}")


def _rows(name: str, held: str) -> list[dict]:
    if not (ROOT / name / f"without-{held}" / f"{held}_finder.csv").is_file():
        sys.exit(f"{ROOT / name / f'without-{held}'}: no {held}_finder.csv (first: scripts/finder_search.py run {name})")
    with open(ROOT / name / f"without-{held}" / f"{held}_finder.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _auc(rows: list[dict]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([r["label"] == "malignant" for r in rows], [float(r["p_found_box"]) for r in rows]))


def paired_interval(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean over sources of (b - a) per-image values, with its 95 % interval resampling each source's clusters.
    ``a``, ``b``: source -> (values (N,), clusters (N,)), the same images in the same order."""
    from rcdnet.evaluation.selection import cluster_weights

    rng, draws, point = np.random.default_rng(seed), np.zeros(n_boot), []
    for h in sorted(a):
        (va, clusters), (vb, _) = a[h], b[h]
        W = cluster_weights(clusters, n_boot, rng)
        point.append((vb - va).mean())
        draws += W @ (vb - va) / W.sum(axis=1)
    draws /= len(a)
    return float(np.mean(point)), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def _summary(rows: list[dict]) -> dict:
    lesion = [r for r in rows if r["label"] != "normal"]
    normal = [r for r in rows if r["label"] == "normal"]
    return {"n": len(lesion), "iou": np.mean([float(r["box_iou"]) >= 0.5 for r in lesion]),
            "dice": np.mean([float(r["dice"]) for r in lesion]), "found": np.mean([int(r["found"]) for r in lesion]),
            "no_lesion": np.mean([not int(r["found"]) for r in normal]) if normal else None,
            "n_normal": len(normal), "auc": _auc(lesion)}


def versus(default: str, candidate: str) -> None:
    from rcdnet.runtime import environment

    env = environment()
    rows = {(n, h): sorted(_rows(n, h), key=lambda r: r["key"]) for n in (default, candidate) for h in SOURCES}
    for h in SOURCES:
        if [r["key"] for r in rows[default, h]] != [r["key"] for r in rows[candidate, h]]:
            sys.exit(f"{h}: the two recipes did not score the same images")
    stats = {k: _summary(v) for k, v in rows.items()}
    paired = {n: {h: (np.array([float(r["box_iou"]) >= 0.5 for r in rows[n, h] if r["label"] != "normal"], float),
                      np.array([r["group"] for r in rows[n, h] if r["label"] != "normal"])) for h in SOURCES}
              for n in (default, candidate)}
    d, lo, hi = paired_interval(paired[default], paired[candidate])
    f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"`python scripts/finder_search.py versus {default} {candidate}` at commit `{env['commit']}`, {env['date']}"
          f" ({env['hardware']}).\n")
    print("| finder | held out | lesion images | box IoU >= 0.5 | Dice | found | \"no lesion\" on normal images | "
          "AUC on found boxes |\n|---|---|---|---|---|---|---|---|")
    for name in (default, candidate):
        for h in SOURCES:
            s = stats[name, h]
            normal = f"{f(s['no_lesion'])} ({s['n_normal']})" if s["n_normal"] else "–"
            print(f"| {name} | {h} | {s['n']} | {f(s['iou'])} | {f(s['dice'])} | {f(s['found'])} | {normal} | "
                  f"{f(s['auc'])} |")
    means = {n: np.mean([stats[n, h]["iou"] for h in SOURCES]) for n in (default, candidate)}
    ahead = lo > 0.0
    guard = all(stats[candidate, h]["dice"] >= stats[default, h]["dice"] - DICE_MARGIN for h in SOURCES)
    print(f"\nMean box IoU >= 0.5 over the four held-out sources: {default} {means[default]:.3f}, {candidate} "
          f"{means[candidate]:.3f}; {candidate} - {default}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (95 %, paired, clusters "
          f"resampled). (a) the interval lies above 0: {'yes' if ahead else 'no'}; (b) no source's Dice more than "
          f"{DICE_MARGIN} below: {'yes' if guard else 'no'}. Decision: **{candidate if ahead and guard else default}**.")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "versus":
        versus(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

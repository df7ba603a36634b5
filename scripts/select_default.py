"""Choose the default configuration by transfer across hospitals (the rule: docs/selection.md, rcdnet.evaluation.selection).

    python scripts/select_default.py run [--jobs N] RECIPE [RECIPE ...]   # src/rcdnet/configs/recipes/RECIPE.yaml -> runs/selection/RECIPE
    python scripts/select_default.py table > docs/selection.md

`run` does, with the README's own commands (finished steps are skipped, so it resumes), step 1 for every recipe
given and then step 2 for every recipe:
1. the two leave-one-source-out folds: `rcdnet train` on BUSI alone with BUS-UCLM as its only external set
   (`busi-to-bus-uclm/`), and on BUS-UCLM alone with BUSI as its only external set (`bus-uclm-to-busi/`); each fold
   chooses its epoch and operating points on its own in-source validation split; then `rcdnet evaluate --tta` of the
   held-out source and of the in-source validation split, the test-time variant;
2. the finished configuration: `rcdnet train` on every training source (`all/`), whose evaluation ends with the one
   scoring on UDIAT, and `rcdnet evaluate --tta` on its validation split and on UDIAT.

`--jobs N` (a machine with many cores, or a GPU) preprocesses every source once for every recipe's preprocessing with
all cores, then runs N recipes at a time (each its folds, then its finished configuration; log in
runs/selection/RECIPE/run.log), each with cores / N threads. What each run computes is the same as with one job.

`table` applies the rule to every recipe whose folds are finished (x {no TTA, TTA}) and prints the page: transfer
scores, the paired cluster-bootstrap differences from the leader, the choice, and, reported and never read by the
rule, the in-source validation and UDIAT numbers of the finished configurations with the rank correlations.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path("runs/selection")
RCDNET = [sys.executable, "-m", "rcdnet"]
REFERENCE = Path("src/rcdnet/configs/recipes/paper.yaml")  # options are counted over the paper's recipe
FOLDS = {"busi-to-bus-uclm": ("busi", "bus-uclm"), "bus-uclm-to-busi": ("bus-uclm", "busi")}
SOURCES = "[busi, bus-uclm]"
TAGS = {"": [], "+TTA": ["--tta"]}


def sh(args: list) -> None:
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)


def _train(config: Path, out: Path, sources: str, external: str) -> None:
    if not (out / "report.md").exists():
        sh(RCDNET + ["train", "--config", config, "--out", out, "--quiet", "--set", f"data.sources={sources}",
                     "--set", f"data.external={external}"]
           + (["--resume"] if (out / "checkpoints" / "last.pt").exists() else []))


def _evaluate(run: Path, dataset: str, tag: str) -> None:
    out = run / f"eval{tag}"
    if not (out / f"{dataset}_metrics.json").exists():
        sh(RCDNET + ["evaluate", run, "--dataset", dataset, "--out", out, "--quiet", *TAGS[tag]])


def run(recipes: list[str]) -> None:
    """Every recipe's folds first (all the rule reads), then every finished configuration."""
    configs = _configs(recipes)
    for name, config in configs.items():
        for fold, (train_on, held_out) in FOLDS.items():
            _train(config, ROOT / name / fold, f"[{train_on}]", f"[{held_out}]")
            for dataset in (held_out, "val"):
                _evaluate(ROOT / name / fold, dataset, "+TTA")
    for name, config in configs.items():
        _train(config, ROOT / name / "all", SOURCES, "[udiat]")
        for dataset in ("val", "udiat"):
            _evaluate(ROOT / name / "all", dataset, "+TTA")


def _configs(recipes: list[str]) -> dict[str, Path]:
    configs = {name: Path("src/rcdnet/configs/recipes") / f"{name}.yaml" for name in recipes}
    for config in configs.values():
        if not config.is_file():
            sys.exit(f"{config}: no such recipe")
    return configs


def _warm(configs: dict[str, Path]) -> None:
    """Preprocess (and cache) every image of every source once per distinct preprocessing of the recipes, masks
    too, with all cores, so that parallel recipes do not each preprocess the same images."""
    from rcdnet import runtime
    from rcdnet.config import load_config
    from rcdnet.data.preprocess import (
        Preprocessor,
        preprocess_masks,
        preprocess_samples,
    )
    from rcdnet.data.sources import READERS, load_dataset

    runtime.apply()
    samples = [s for name in READERS for s in load_dataset(name)[0]]
    for pre in {Preprocessor.from_config(load_config(c).data) for c in configs.values()}:
        print(f"preprocessing {len(samples)} images: {pre}", flush=True)
        preprocess_samples(samples, pre)
        preprocess_masks(samples, pre)


def run_parallel(recipes: list[str], jobs: int, argv=None, root: Path = ROOT) -> None:
    """``jobs`` recipes at a time, each in its own process with cores / ``jobs`` threads, its output in
    ``root/RECIPE/run.log``. ``argv(recipe)`` is the command (default: this script's ``run RECIPE``: its folds, then
    its finished configuration)."""
    from rcdnet.runtime import cores

    configs = _configs(recipes)
    _warm(configs)
    env = {**os.environ, "RCDNET_THREADS": str(max(1, cores() // jobs))}
    argv = argv or (lambda name: [sys.executable, __file__, "run", name])

    def one(name: str) -> int:
        (root / name).mkdir(parents=True, exist_ok=True)
        with open(root / name / "run.log", "a") as log:
            code = subprocess.run(argv(name), stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
        print(f"{name}: " + ("done" if code == 0 else f"FAILED (exit {code}), see {root / name / 'run.log'}"),
              flush=True)
        return code

    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(one, configs))
    if any(codes):
        sys.exit(1)


def _metrics_dir(run: Path, tag: str) -> Path:
    return run / f"eval{tag}" if tag else run


def _clusters(run: Path, dataset: str, keys: list[str]) -> list[str]:
    """A cluster per held-out image: its patient (BUS-UCLM) joined with its duplicates (the run's screening)."""
    from rcdnet.data.duplicates import DuplicatePair, group_pool
    from rcdnet.data.sources import load_dataset

    samples = {s.key: s for s in load_dataset(dataset)[0]}
    with open(run / "duplicates.csv", newline="") as fh:
        pairs = [DuplicatePair(r["a"], r["b"], r["kind"], 0, 0, 0.0, 0.0) for r in csv.DictReader(fh)
                 if r["a"] in samples and r["b"] in samples]
    mine = [samples[k] for k in keys]
    group_pool(mine, pairs)
    return [s.group for s in mine]


def _held_out(run: Path, dataset: str, tag: str, common: set[str]):
    """The held-out predictions on the images every candidate scored (a region-of-interest candidate skips the
    few images whose mask does not fit them)."""
    import numpy as np

    from rcdnet.evaluation.selection import HeldOut

    rows = sorted((r for r in _predictions(run, dataset, tag) if r["key"] in common), key=lambda r: r["key"])
    keys = [r["key"] for r in rows]
    return HeldOut(np.array([r["label"] == "malignant" for r in rows], int),
                   np.array([float(r["p_malignant"]) for r in rows]), np.array(_clusters(run, dataset, keys)))


def _predictions(run: Path, dataset: str, tag: str) -> list[dict]:
    with open(_metrics_dir(run, tag) / f"{dataset}_predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def n_options(config: Path, tag: str) -> int:
    """Settings in which a recipe (plus its test-time variant) differs from the paper's, sources aside."""
    from rcdnet.config import load_config

    def leaves(d: dict, prefix: str = "") -> dict:
        return {k2: v2 for k, v in d.items() for k2, v2 in
                (leaves(v, f"{prefix}{k}.").items() if isinstance(v, dict) else [(f"{prefix}{k}", v)])}

    a, b = leaves(load_config(config).to_dict()), leaves(load_config(REFERENCE).to_dict())
    a["eval.tta"] = a["eval.tta"] or bool(tag)
    return sum(a[k] != b[k] for k in a if k not in ("data.sources", "data.external"))


def _metrics(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _run_envs(done: list[tuple[str, str]]) -> list[dict]:
    """Where each trained run (fold or finished configuration) of the finished recipes was made (its metrics.json)."""
    files = [ROOT / recipe / run / "metrics.json" for recipe in {r for r, _ in done} for run in [*FOLDS, "all"]]
    return [json.loads(f.read_text())["env"] for f in files if f.exists()]


def table() -> None:
    from scipy.stats import spearmanr

    from rcdnet.runtime import environment
    from rcdnet.evaluation.selection import Candidate, choose

    candidates, finals = [], {}
    done = [(recipe, tag) for recipe in (sorted(p.name for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else [])
            for tag in TAGS if all((_metrics_dir(ROOT / recipe / f, tag) / f"{held}_predictions.csv").exists()
                                   for f, (_, held) in FOLDS.items())]
    common = {f: set.intersection(*({r["key"] for r in _predictions(ROOT / recipe / f, held, tag)}
                                    for recipe, tag in done)) if done else set()
              for f, (_, held) in FOLDS.items()}
    for recipe, tag in done:
        runs = {fold: ROOT / recipe / fold for fold in FOLDS}
        name = recipe + tag
        candidates.append(Candidate(name, n_options(Path("src/rcdnet/configs/recipes") / f"{recipe}.yaml", tag),
                                    {f"{FOLDS[f][0]}->{FOLDS[f][1]}": _held_out(r, FOLDS[f][1], tag, common[f])
                                     for f, r in runs.items()}))
        in_source = _metrics(_metrics_dir(runs["busi-to-bus-uclm"], tag) / "val_metrics.json")
        all_dir = _metrics_dir(ROOT / recipe / "all", tag)
        finals[name] = {"busi_val": in_source, "val": _metrics(all_dir / "val_metrics.json"),
                        "udiat": _metrics(all_dir / "udiat_metrics.json")}
    if not candidates:
        sys.exit(f"no recipe under {ROOT} has both folds finished")
    choice = choose(candidates)
    env = environment()
    f = lambda x: "–" if x is None else f"{x:.3f}"
    auc = lambda m: None if m is None else m["operating_points"]["default"]["auc"]["value"]
    print("# Choosing the default by transfer across hospitals\n")
    print(f"Generated by `python scripts/select_default.py table` from the runs of `python scripts/select_default.py "
          f"run {' '.join(sorted({c.name.split('+')[0] for c in candidates}))}`; page written {env['date']} at commit "
          f"`{env['commit']}` on {env['hardware']} (each run's own commit and timing are in its report.md). The rule "
          "and why it is this one: [docs/selection.md](selection.md#the-rule).\n")
    made = {(e["commit"], e["hardware"], e["torch"]) for e in _run_envs(done)}
    print("Runs made at " + "; ".join(f"commit `{c}` on {h} (torch {t})" for c, h, t in sorted(made)) + ".\n")
    directions = list(candidates[0].held_out)
    print("Held-out images scored by every candidate: " + "; ".join(
        f"{d}: {len(h.y)} ({int(h.y.sum())} malignant, {len(set(h.clusters))} clusters)"
        for d, h in candidates[0].held_out.items()) + ".\n")
    print("| configuration | options | " + " | ".join(f"AUC {d}" for d in directions)
          + " | transfer score | behind the leader [95% CI] | eligible |")
    print("|---|---|" + "---|" * len(directions) + "---|---|---|")
    for r in choice.rows:
        mark = " **(chosen)**" if r["name"] == choice.chosen.name else ""
        lo, hi = r["ci"]
        print(f"| {r['name']}{mark} | {r['n_options']} | " + " | ".join(f(r[f'auc {d}']) for d in directions)
              + f" | {f(r['score'])} | {r['behind_leader']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
              f"{'yes' if r['eligible'] else 'no'} |")
    print(f"\nLeader: **{choice.leader.name}**; chosen by the rule: **{choice.chosen.name}**.\n")
    print("## Reported, never read by the rule\n")
    print("In-source validation (the old rule's input) and the finished configurations (trained on every source) on "
          "their pooled validation split and on UDIAT, the external test scored once per finished configuration.\n")
    print("| configuration | BUSI validation AUC (BUSI-only fold) | pooled validation AUC (all sources) | UDIAT AUC [95% CI] "
          "| UDIAT sens / spec @0.5 |")
    print("|---|---|---|---|---|")
    for c in candidates:
        m = finals[c.name]
        u = m["udiat"]["operating_points"]["default"] if m["udiat"] else None
        print(f"| {c.name} | {f(auc(m['busi_val']))} | {f(auc(m['val']))} | "
              + (f"{f(u['auc']['value'])} [{f(u['auc']['ci'][0])}, {f(u['auc']['ci'][1])}] | "
                 f"{f(u['sensitivity']['value'])} / {f(u['specificity']['value'])} |" if u else "– | – |"))
    scored = [c for c in candidates if finals[c.name]["udiat"]]
    if len(scored) >= 3:
        u = [auc(finals[c.name]["udiat"]) for c in scored]
        new = spearmanr([c.score for c in scored], u)
        old = spearmanr([auc(finals[c.name]["busi_val"]) for c in scored], u)
        print(f"\nOver the {len(scored)} finished configurations, Spearman rank correlation with UDIAT AUC: transfer "
              f"score {new.statistic:+.2f} (p = {new.pvalue:.2f}), BUSI validation AUC {old.statistic:+.2f} "
              f"(p = {old.pvalue:.2f}). Test-time variants share a checkpoint, so rows are not independent.")
    else:
        print(f"\n{len(scored)} finished configurations scored on UDIAT so far: too few for a rank correlation.")


def cli(argv: list[str], doc: str, run, run_parallel, table) -> None:
    """``run [--jobs N] RECIPE ...`` or ``table``: the command line of this script and of loso_search.py."""
    if len(argv) < 2 or argv[1] not in ("run", "table"):
        sys.exit(doc)
    if argv[1] == "table":
        table()
    elif len(argv) > 2 and argv[2] == "--jobs":
        if len(argv) < 5 or not argv[3].isdigit() or int(argv[3]) < 1:
            sys.exit("run --jobs N RECIPE [RECIPE ...]: N is a whole number >= 1, then at least one recipe")
        run_parallel(argv[4:], int(argv[3]))
    else:
        run(argv[2:])


if __name__ == "__main__":
    cli(sys.argv, __doc__, run, run_parallel, table)

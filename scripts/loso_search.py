"""Choose the default recipe by leaving each hospital out in turn (the rule: docs/loso.md, rcdnet.evaluation.loso_rule).

    python scripts/loso_search.py run [--jobs N] RECIPE [RECIPE ...]   # configs/ablations/RECIPE.yaml -> runs/loso/RECIPE
    python scripts/loso_search.py table > docs/loso_results.md

`run` calls, for every recipe, the README's own command (finished folds are kept, so it resumes):

    rcdnet cv --by-source --seeds 0 1 --config configs/ablations/RECIPE.yaml --out runs/loso/RECIPE
        --set data.sources=[busi, bus-uclm, breast, udiat] --set data.external=[]

that is 4 held-out sources x 2 seeds = 8 trainings per recipe. `--jobs N` (a machine with many cores or a GPU)
preprocesses every source once per distinct preprocessing, then runs N recipes at a time with cores / N threads each
(log: runs/loso/RECIPE/run.log).

`table` applies the rule to every recipe whose folds are all finished, and to each one's seed ensemble (the mean
probability of its seeds: one option more), and prints the page: every candidate's per-source AUCs, LOSO score,
worst source, the interval of its difference from the leader, the choice; then each recipe's own LOSO table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path("runs/loso")
SOURCES = ["busi", "bus-uclm", "breast", "udiat"]
SEEDS = [0, 1]
RCDNET = [sys.executable, "-m", "rcdnet"]


def command(recipe: str) -> list[str]:
    return RCDNET + ["cv", "--by-source", "--seeds", *map(str, SEEDS), "--config", f"configs/ablations/{recipe}.yaml",
                     "--out", str(ROOT / recipe), "--quiet", "--set", f"data.sources=[{', '.join(SOURCES)}]",
                     "--set", "data.external=[]"]


def _configs(recipes: list[str]) -> dict[str, Path]:
    configs = {name: Path("configs/ablations") / f"{name}.yaml" for name in recipes}
    missing = [str(c) for c in configs.values() if not c.is_file()]
    if missing or not configs:
        sys.exit(f"no such recipe: {', '.join(missing) or '(none given)'}")
    return configs


def run(recipes: list[str]) -> None:
    for recipe in _configs(recipes):
        args = command(recipe)
        print("$", " ".join(args), flush=True)
        subprocess.run(args, check=True)


def run_parallel(recipes: list[str], jobs: int) -> None:
    from select_default import _warm  # the same cache warming as the two-source search

    from rcdnet.runtime import cores

    configs = _configs(recipes)
    _warm(configs)
    env = {**os.environ, "RCDNET_THREADS": str(max(1, cores() // jobs))}

    def one(recipe: str) -> int:
        (ROOT / recipe).mkdir(parents=True, exist_ok=True)
        with open(ROOT / recipe / "run.log", "a") as log:
            code = subprocess.run(command(recipe), stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        print(f"{recipe}: " + ("done" if code == 0 else f"FAILED (exit {code}), see {ROOT / recipe / 'run.log'}"),
              flush=True)
        return code

    with ThreadPoolExecutor(jobs) as pool:
        if any(list(pool.map(one, configs))):
            sys.exit(1)


def _finished(recipe: Path) -> bool:
    return all((recipe / f"seed{s}" / f"without-{h}" / f"{h}_metrics.json").is_file() for s in SEEDS for h in SOURCES)


def candidates() -> list:
    """Every finished recipe, and its seed ensemble, as rule candidates on the images all of them scored."""
    import csv

    from select_default import n_options

    from rcdnet.evaluation.loso_rule import LosoCandidate, SourceScores

    recipes = sorted(p for p in ROOT.iterdir() if p.is_dir() and _finished(p)) if ROOT.is_dir() else []
    if not recipes:
        sys.exit(f"no recipe under {ROOT} has all {len(SOURCES) * len(SEEDS)} folds finished")
    preds = {}
    for r in recipes:
        with open(r / "loso_predictions.csv", newline="") as fh:
            preds[r.name] = list(csv.DictReader(fh))
    common = {h: set.intersection(*({x["key"] for x in rows if x["source"] == h} for rows in preds.values()))
              for h in SOURCES}
    out = []
    for r in recipes:
        scores = {}
        for h in SOURCES:
            rows = sorted((x for x in preds[r.name] if x["source"] == h and x["key"] in common[h]),
                          key=lambda x: (int(x["seed"]), x["key"]))
            by_seed = {s: [x for x in rows if int(x["seed"]) == s] for s in SEEDS}
            first = by_seed[SEEDS[0]]
            scores[h] = SourceScores(np.array([x["label"] == "malignant" for x in first], int),
                                     np.array([[float(x["p_malignant"]) for x in by_seed[s]] for s in SEEDS]),
                                     np.array([x["group"] for x in first]))
        single = LosoCandidate(r.name, n_options(Path("configs/ablations") / f"{r.name}.yaml", ""), scores)
        ensemble = LosoCandidate(f"{r.name} x{len(SEEDS)} ensemble", single.n_options + 1,
                                 {h: SourceScores(s.y, s.P.mean(axis=0, keepdims=True), s.clusters)
                                  for h, s in scores.items()}, extra_variance=single.seed_variance)
        out += [single, ensemble]
    return out


def table() -> None:
    from rcdnet.evaluation.loso_rule import WORST_MARGIN, choose_by_loso
    from rcdnet.evaluation.report import environment

    cands = candidates()
    choice = choose_by_loso(cands)
    env = environment()
    f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    print("# Choosing the default by leaving each hospital out\n")
    print(f"Generated by `python scripts/loso_search.py table` at commit `{env['commit']}` on {env['date']} "
          f"({env['hardware']}) from `runs/loso/*`; the rule: [loso.md](loso.md#the-rule). Each fold's own commit and "
          "hardware are in its report.md.\n")
    print("Held-out images scored by every candidate: " + "; ".join(
        f"{h}: {len(s.y)} ({int(s.y.sum())} malignant, {len(set(s.clusters))} clusters)"
        for h, s in cands[0].sources.items()) + ".\n")
    print("| candidate | options | seeds | " + " | ".join(f"AUC {h}" for h in SOURCES)
          + " | LOSO score (seed sd) | worst source | behind the leader [95% CI] | eligible |")
    print("|---|---|---|" + "---|" * len(SOURCES) + "---|---|---|---|")
    for r in choice.rows:
        mark = " **(chosen)**" if r["name"] == choice.chosen.name else ""
        lo, hi = r["ci"]
        why = "yes" if r["eligible"] else ("no: behind" if not r["close"] else f"no: worst > {WORST_MARGIN} lower")
        print(f"| {r['name']}{mark} | {r['n_options']} | {r['n_seeds']} | "
              + " | ".join(f(r[f"auc {h}"]) for h in SOURCES)
              + f" | {f(r['score'])} ({f(r['seed_sd'])}) | {r['worst_source']} {f(r['worst_auc'])} | "
              f"{r['behind_leader']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {why} |")
    print(f"\nLeader: **{choice.leader.name}**; chosen by the rule: **{choice.chosen.name}**.\n")
    for c in cands:
        page = ROOT / c.name / "loso.md"
        if page.is_file():
            print(f"## {c.name}\n\n" + page.read_text().split("\n", 2)[2])
    summary = {c.name: {"score": c.score, "worst": c.worst} for c in cands}
    (ROOT / "choice.json").write_text(json.dumps({"chosen": choice.chosen.name, "leader": choice.leader.name,
                                                  "candidates": summary}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "table"):
        sys.exit(__doc__)
    if sys.argv[1] == "table":
        table()
    elif len(sys.argv) > 2 and sys.argv[2] == "--jobs":
        if len(sys.argv) < 5 or not sys.argv[3].isdigit() or int(sys.argv[3]) < 1:
            sys.exit("run --jobs N RECIPE [RECIPE ...]: N is a whole number >= 1, then at least one recipe")
        run_parallel(sys.argv[4:], int(sys.argv[3]))
    else:
        run(sys.argv[2:])

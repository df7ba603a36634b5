"""Choose the default recipe by leaving each hospital out in turn (the rule: docs/loso.md, rcdnet.evaluation.loso_rule).

    python scripts/loso_search.py run [--jobs N] RECIPE [RECIPE ...]   # src/rcdnet/configs/recipes/RECIPE.yaml -> runs/loso/RECIPE
    python scripts/loso_search.py table > docs/loso_results.md

`run` calls, for every recipe, the README's own command (finished folds are kept, so it resumes):

    rcdnet cv --by-source --seeds 0 1 --config src/rcdnet/configs/recipes/RECIPE.yaml --out runs/loso/RECIPE
        --set data.sources=[busi, bus-uclm, breast, udiat] --set data.external=[]

that is 4 held-out sources x 2 seeds = 8 trainings per recipe. `--jobs N` (a machine with many cores or a GPU)
preprocesses every source once per distinct preprocessing, then runs N recipes at a time with cores / N threads each
(log: runs/loso/RECIPE/run.log).

`versus SINGLE ENSEMBLE` (runs/loso/SINGLE with any seeds, runs/loso/ENSEMBLE with several) applies step 10 of
docs/loso.md: the interval of (SINGLE - the mean of ENSEMBLE's seeds) LOSO score, paired over the held-out clusters,
with the training noise of both (SINGLE's seed variance, 0 with one seed; the ensemble's members' variance over their
number), and both worst sources.

`ensembles DEFAULT CANDIDATE` (both with several seeds) applies step 11: the interval of (CANDIDATE - DEFAULT) LOSO
score of the two seed ensembles, each carrying its members' seed variance over their number; the candidate wins only
when the interval lies above 0 and its worst source is at most 0.02 below the default's.

`cheaper DEFAULT CANDIDATE` (both with several seeds) applies step 13: a candidate that costs less replaces the
default unless the interval of (DEFAULT - CANDIDATE) LOSO score of the two seed ensembles lies above 0 or the
candidate's worst source is more than 0.02 below the default's.

`boxes DEFAULT CANDIDATE` applies step 18: both ensembles compared around step 17's moved boxes
(runs/loso/RECIPE@box25, from scripts/loso_boxes.py) and around the masks' boxes; the candidate wins only when it is
ahead around the moved boxes (the interval above 0), not behind beyond the noise around the masks' boxes, and its worst
source is at most 0.02 below the default's in both.

`table` applies the rule to every recipe whose folds are all finished, and to each one's seed ensemble (the mean
probability of its seeds: one option more), and prints the page: every candidate's per-source AUCs, LOSO score,
worst source, the interval of its difference from the leader, the choice; then each recipe's own LOSO table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path("runs/loso")
SOURCES = ["busi", "bus-uclm", "breast", "udiat"]
SEEDS = [0, 1]
RCDNET = [sys.executable, "-m", "rcdnet"]


def command(recipe: str) -> list[str]:
    return RCDNET + ["cv", "--by-source", "--seeds", *map(str, SEEDS), "--config", recipe,
                     "--out", str(ROOT / recipe), "--quiet", "--set", f"data.sources=[{', '.join(SOURCES)}]",
                     "--set", "data.external=[]"]


def _configs(recipes: list[str]) -> dict[str, Path]:
    configs = {name: Path("src/rcdnet/configs/recipes") / f"{name}.yaml" for name in recipes}
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
    from select_default import run_parallel as parallel  # the same cache warming and pool as the two-source search

    parallel(list(_configs(recipes)), jobs, argv=command, root=ROOT)


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
        single = LosoCandidate(r.name, n_options(Path("src/rcdnet/configs/recipes") / f"{r.name}.yaml", ""), scores)
        ensemble = LosoCandidate(f"{r.name} x{len(SEEDS)} ensemble", single.n_options + 1,
                                 {h: SourceScores(s.y, s.P.mean(axis=0, keepdims=True), s.clusters)
                                  for h, s in scores.items()}, extra_variance=single.seed_variance)
        out += [single, ensemble]
    return out


def _read(recipe: Path) -> tuple[list[dict], list[int]]:
    import csv

    if not (recipe / "loso_predictions.csv").is_file():
        sys.exit(f"{recipe}: no loso_predictions.csv (first: python scripts/loso_search.py run {recipe.name})")
    with open(recipe / "loso_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, sorted({int(x["seed"]) for x in rows})


def _scores(rows: list[dict], seeds: list[int], keys: dict[str, set]) -> dict:
    """held-out source -> SourceScores over ``seeds`` on the images ``keys`` names."""
    from rcdnet.evaluation.loso_rule import SourceScores

    out = {}
    for h in SOURCES:
        mine = sorted((x for x in rows if x["source"] == h and x["key"] in keys[h]), key=lambda x: (int(x["seed"]),
                                                                                                   x["key"]))
        by_seed = {s: [x for x in mine if int(x["seed"]) == s] for s in seeds}
        first = by_seed[seeds[0]]
        out[h] = SourceScores(np.array([x["label"] == "malignant" for x in first], int),
                              np.array([[float(x["p_malignant"]) for x in by_seed[s]] for s in seeds]),
                              np.array([x["group"] for x in first]))
    return out


def _ensemble(recipe: str, rows: list[dict], seeds: list[int], keys: dict[str, set]) -> tuple:
    """(each seed alone, the mean of the seeds' probabilities carrying the members' seed variance)."""
    from rcdnet.evaluation.loso_rule import LosoCandidate, SourceScores

    members = LosoCandidate(recipe, 0, _scores(rows, seeds, keys))
    return members, LosoCandidate(f"{recipe} (mean of seeds {', '.join(map(str, seeds))})", 0,
                                  {h: SourceScores(s.y, s.P.mean(axis=0, keepdims=True), s.clusters)
                                   for h, s in members.sources.items()}, extra_variance=members.seed_variance)


def _compare_page(command: str, a: str, b: str, ensemble_a: bool) -> tuple:
    """Read both recipes on the images both scored, print the header and the AUC table; (a's, b's ensemble)."""
    from rcdnet.runtime import environment

    (a_rows, a_seeds), (b_rows, b_seeds) = _read(ROOT / a), _read(ROOT / b)
    keys = {h: {x["key"] for x in a_rows if x["source"] == h} & {x["key"] for x in b_rows if x["source"] == h}
            for h in SOURCES}
    env = environment()
    print(f"`python scripts/loso_search.py {command} {a} {b}` at commit `{env['commit']}`, {env['date']}"
          f" ({env['hardware']}); images both scored: " + "; ".join(f"{h} {len(keys[h])}" for h in SOURCES) + ".\n")
    print("| candidate | seeds | " + " | ".join(f"AUC {h}" for h in SOURCES) + " | LOSO score | worst source |")
    print("|---|---|" + "---|" * len(SOURCES) + "---|---|")
    rows, chosen = [], []
    for recipe, recipe_rows, seeds, as_ensemble in ((a, a_rows, a_seeds, ensemble_a), (b, b_rows, b_seeds, True)):
        members, mean = _ensemble(recipe, recipe_rows, seeds, keys)
        rows.append((f"{recipe}, each seed alone (seed mean)" if as_ensemble else recipe, len(seeds), members))
        if as_ensemble:
            rows.append((mean.name, "one ensemble", mean))
        chosen.append(mean if as_ensemble else members)
    f = lambda x: f"{x:.3f}"  # noqa: E731
    for name, n, c in rows:
        print(f"| {name} | {n} | " + " | ".join(f(c.sources[h].auc) for h in SOURCES)
              + f" | {f(c.score)} | {c.worst[0]} {f(c.worst[1])} |")
    for name, n, c in rows:
        if n != "one ensemble" and len(c.seed_scores) > 1:
            print(f"\nSeed-to-seed sd of {name.split(',')[0]}'s LOSO score: {float(np.std(c.seed_scores, ddof=1)):.3f}"
                  f" (seeds: {', '.join(f(x) for x in c.seed_scores)}).")
    return tuple(chosen)


def versus(single: str, ensemble: str) -> None:
    """Step 10 of docs/loso.md: one recipe against another's seed ensemble (printed as a Markdown section)."""
    from rcdnet.evaluation.loso_rule import WORST_MARGIN, compared

    a, b = _compare_page("versus", single, ensemble, ensemble_a=False)
    d, lo, hi = compared(a, b)
    tie, guard = lo <= 0.0, b.worst[1] >= a.worst[1] - WORST_MARGIN
    print(f"\n{single} - ensemble: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (95 %). (a) the interval reaches 0 or lies below it: "
          f"{'yes' if tie else 'no'}; (b) worst source no more than {WORST_MARGIN} below: {'yes' if guard else 'no'}. "
          f"Decision: **{'the ensemble' if tie and guard else single}**.")


def _two_ensembles(command: str, default: str, candidate: str, candidate_first: bool) -> tuple:
    """Both recipes' seed ensembles on the images both scored (the page printed): the interval (d, lo, hi) of
    (candidate - default) LOSO score, or of (default - candidate), and whether the candidate's worst source is at
    most WORST_MARGIN below the default's."""
    from rcdnet.evaluation.loso_rule import WORST_MARGIN, compared

    a, b = _compare_page(command, default, candidate, ensemble_a=True)
    return (*(compared(b, a) if candidate_first else compared(a, b)), b.worst[1] >= a.worst[1] - WORST_MARGIN)


def ensembles(default: str, candidate: str) -> None:
    """Step 11 of docs/loso.md: two recipes' seed ensembles; the candidate replaces the default only when the interval
    of (candidate - default) LOSO score lies above 0 and its worst source is at most WORST_MARGIN lower."""
    from rcdnet.evaluation.loso_rule import WORST_MARGIN

    d, lo, hi, guard = _two_ensembles("ensembles", default, candidate, candidate_first=True)
    ahead = lo > 0.0
    print(f"\n{candidate} - {default}, both ensembles: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (95 %). (a) the interval lies "
          f"above 0: {'yes' if ahead else 'no'}; (b) worst source no more than {WORST_MARGIN} below the default's: "
          f"{'yes' if guard else 'no'}. Decision: **{candidate if ahead and guard else default}**.")


def cheaper(default: str, candidate: str) -> None:
    """Step 13 of docs/loso.md: a candidate that costs less (the default without an option) against the default, both
    seed ensembles; the candidate replaces the default unless the interval of (default - candidate) LOSO score lies
    above 0 or the candidate's worst source is more than WORST_MARGIN lower."""
    from rcdnet.evaluation.loso_rule import WORST_MARGIN

    d, lo, hi, guard = _two_ensembles("cheaper", default, candidate, candidate_first=False)
    helps = lo > 0.0
    print(f"\n{default} - {candidate}, both ensembles: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (95 %). (a) the interval lies "
          f"above 0 (the option helps): {'yes' if helps else 'no'}; (b) the candidate's worst source no more than "
          f"{WORST_MARGIN} below the default's: {'yes' if guard else 'no'}. "
          f"Decision: **{candidate if guard and not helps else default}**.")


def boxes(default: str, candidate: str, tag: str = "box25") -> None:
    """Step 18 of docs/loso.md: the candidate replaces the default only when, scored around the moved boxes of step 17
    (runs/loso/RECIPE@box25, written by scripts/loso_boxes.py), the interval of (candidate - default) LOSO score of
    the two seed ensembles lies above 0; scored around the masks' boxes, the candidate is not behind beyond the noise
    (that interval's upper end at or above 0); and its worst source is at most WORST_MARGIN below the default's in
    both."""
    from rcdnet.evaluation.loso_rule import WORST_MARGIN

    d, lo, hi, guard = _two_ensembles("boxes", f"{default}@{tag}", f"{candidate}@{tag}", candidate_first=True)
    print()
    d2, lo2, hi2, guard2 = _two_ensembles("boxes", default, candidate, candidate_first=True)
    ahead, not_behind = lo > 0.0, hi2 >= 0.0
    yes = lambda x: "yes" if x else "no"  # noqa: E731
    print(f"\n{candidate} - {default}, both ensembles: around the moved boxes {d:+.3f} [{lo:+.3f}, {hi:+.3f}], around "
          f"the masks' boxes {d2:+.3f} [{lo2:+.3f}, {hi2:+.3f}] (95 %). (a) ahead around the moved boxes (the interval "
          f"above 0): {yes(ahead)}; (b) not behind around the masks' boxes (its upper end >= 0): {yes(not_behind)}; "
          f"(c) worst source no more than {WORST_MARGIN} below the default's in both: {yes(guard and guard2)}. "
          f"Decision: **{candidate if ahead and not_behind and guard and guard2 else default}**.")


def table() -> None:
    from rcdnet.evaluation.loso_rule import WORST_MARGIN, choose_by_loso
    from rcdnet.runtime import environment

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
        mark = " **(chosen)**" if r.name == choice.chosen.name else ""
        lo, hi = r.ci
        why = "yes" if r.eligible else ("no: behind" if not r.close else f"no: worst > {WORST_MARGIN} lower")
        print(f"| {r.name}{mark} | {r.n_options} | {r.n_seeds} | " + " | ".join(f(r.aucs[h]) for h in SOURCES)
              + f" | {f(r.score)} ({f(r.seed_sd)}) | {r.worst_source} {f(r.worst_auc)} | "
              f"{r.behind_leader:+.3f} [{lo:+.3f}, {hi:+.3f}] | {why} |")
    print(f"\nLeader: **{choice.leader.name}**; chosen by the rule: **{choice.chosen.name}**.\n")
    for c in cands:
        page = ROOT / c.name / "loso.md"
        if page.is_file():
            print(f"## {c.name}\n\n" + page.read_text().split("\n", 2)[2])
    summary = {c.name: {"score": c.score, "worst": c.worst} for c in cands}
    (ROOT / "choice.json").write_text(json.dumps({"chosen": choice.chosen.name, "leader": choice.leader.name,
                                                  "candidates": summary}, indent=1))


if __name__ == "__main__":
    from select_default import cli

    if len(sys.argv) == 4 and sys.argv[1] in ("versus", "ensembles", "cheaper", "boxes"):
        {"versus": versus, "ensembles": ensembles, "cheaper": cheaper, "boxes": boxes}[sys.argv[1]](*sys.argv[2:4])
    else:
        cli(sys.argv, __doc__, run, run_parallel, table)

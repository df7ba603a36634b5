"""Write everything in a benchmark's folder from its finished jobs:

    OUT/table1_internal.csv, OUT/table2_external.csv   the comparison rows (numbers: mean, sd, CI ends)
    OUT/ablation.csv, OUT/delong.csv, OUT/efficiency.csv
    OUT/roc.png          every comparison row's ROC curve, internal and external (the paper's Figure 3)
    OUT/benchmark.json   the numbers;  OUT/benchmark.md   all of the above as one page (:mod:`.markdown`)
"""

from __future__ import annotations

import json
from pathlib import Path

from rcdnet.benchmark.markdown import markdown
from rcdnet.benchmark.profile import Profile
from rcdnet.benchmark.stats import (
    COLUMNS,
    TEST_SETS,
    delong_rows,
    row_groups,
    row_predictions,
    summarise,
    training_minutes,
)
from rcdnet.data.inputs import VALIDATION
from rcdnet.evaluation.metrics import binary_metrics
from rcdnet.evaluation.plots import plot_roc
from rcdnet.runtime import environment
from rcdnet.files import write_csv


def _csv_rows(profile: Profile, stats: dict, seeds_of: dict, test_set: str) -> list[dict]:
    return [{"row": r, "model": profile.rows[r].label, "weights": profile.rows[r].weights, "seeds": len(seeds_of[r]),
             **{f"{k}_{s}": round(stats[r][test_set][k][s], 6) for k, _ in COLUMNS for s in ("mean", "sd", "lo", "hi")}}
            for r in profile.comparison if test_set in stats.get(r, {})]


def _ablation_rows(profile: Profile, stats: dict, seeds_of: dict) -> list[dict]:
    return [{"row": r, "label": label, "weights": profile.rows[r].weights, "seeds": len(seeds_of[r]),
             **{f"{t}_{k}_{s}": round(stats[r][t][k][s], 6) for t in TEST_SETS if t in stats[r]
                for k in ("auc", "accuracy", "sensitivity", "specificity") for s in ("mean", "sd", "lo", "hi")}}
            for r, label in profile.ablation if r in stats]


def _roc_figure(profile: Profile, mean_p: dict, path: Path) -> None:
    """One panel per test set, one curve per comparison row (seed-mean probability)."""
    panels = {}
    for t, title in TEST_SETS.items():
        curves = {f"{profile.rows[r].label} [{profile.rows[r].weights}]": mean_p[r][t]
                  for r in profile.comparison if t in mean_p.get(r, {})}
        if curves:
            n = len(next(iter(curves.values()))[0])
            panels[f"{title}, n={n}"] = {k: (y, p, binary_metrics(y, p)["auc"], None) for k, (y, p, _) in curves.items()}
    plot_roc(panels, path, title="ROC of the seed-mean probability per model")


def write_tables(profile: Profile, out: Path, efficiency: dict[str, dict], heat: dict[str, list[dict]] | None = None,
                 n_boot: int = 2000, command: str = "") -> dict:
    """Everything in OUT from the finished jobs; ``heat``: row -> ``agreement_table`` rows (optional)."""
    out = Path(out)
    stats: dict[str, dict[str, dict]] = {}      # row -> test set -> summary
    mean_p: dict[str, dict[str, tuple]] = {}    # row -> test set -> (y, seed-mean p, groups)
    seeds_of: dict[str, list[int]] = {}
    for row in profile.rows.values():
        for test_set in TEST_SETS:
            seeds, y, P = row_predictions(profile, out, row, test_set)
            if not seeds:
                continue
            seeds_of[row.id] = seeds
            groups = row_groups(profile, out, row, test_set)
            stats.setdefault(row.id, {})[test_set] = summarise(y, P, n_boot, groups)
            mean_p.setdefault(row.id, {})[test_set] = (y, P.mean(0), groups)
    delong = delong_rows(profile, mean_p)
    times = training_minutes(profile, out)
    write_csv(out / "table1_internal.csv", _csv_rows(profile, stats, seeds_of, VALIDATION))
    write_csv(out / "table2_external.csv", _csv_rows(profile, stats, seeds_of, "udiat"))
    write_csv(out / "ablation.csv", _ablation_rows(profile, stats, seeds_of))
    write_csv(out / "delong.csv", delong)
    write_csv(out / "efficiency.csv", [
        {"row": r, "model": profile.rows[r].label,
         **{k: round(v, 4) if isinstance(v, float) else v for k, v in efficiency.get(r, {}).items()},
         "train_minutes_mean": times.get(r, {}).get("mean"), "train_threads": times.get(r, {}).get("threads")}
        for r in profile.rows])
    _roc_figure(profile, mean_p, out / "roc.png")
    summary = {"env": environment(), "profile": profile.name, "seeds": profile.seeds, "stats": stats,
               "seeds_found": seeds_of, "delong": delong, "efficiency": efficiency, "training_minutes": times,
               "heat_maps": heat or {}, "command": command or f"rcdnet benchmark --profile {profile.name}",
               "n_boot": n_boot, "clusters": {t: f"{len(set(v[2]))} groups for {len(v[2])} images"
                                              for t, v in mean_p.get(profile.reference, {}).items()}}
    (out / "benchmark.json").write_text(json.dumps(summary, indent=1))
    (out / "benchmark.md").write_text(markdown(profile, summary))
    return summary

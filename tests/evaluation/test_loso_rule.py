"""The leave-one-source-out rule picks what docs/loso.md says it picks, on constructed held-out scores."""

import numpy as np
import pytest

from rcdnet.evaluation.loso_rule import WORST_MARGIN, LosoCandidate, SourceScores, choose_by_loso, compared

SOURCES = ("a", "b", "c", "d")


def _labels(n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    y = np.tile([0, 0, 1], n // 3 + 1)[:n]
    return y, np.arange(n) // 2  # clusters of two images


def _source(separation: float, seeds: int, seed_noise: float, rng, n: int = 160) -> SourceScores:
    """Held-out scores whose AUC grows with ``separation``; each seed moves every score by its own noise."""
    y, clusters = _labels(n)
    base = y * separation + rng.normal(0, 1, n)
    P = np.stack([1 / (1 + np.exp(-(base + rng.normal(0, seed_noise, n)))) for _ in range(seeds)])
    return SourceScores(y, P, clusters)


def _candidate(name, options, separations, rng, seeds=2, seed_noise=0.05, **kw) -> LosoCandidate:
    return LosoCandidate(name, options, {s: _source(sep, seeds, seed_noise, rng) for s, sep in
                                         zip(SOURCES, separations)}, **kw)


def test_scores_average_seeds_then_sources():
    y, clusters = _labels(6)
    perfect, reversed_ = np.array([0.1, 0.2, 0.9, 0.3, 0.4, 0.8]), np.array([0.9, 0.8, 0.1, 0.7, 0.6, 0.2])
    s = SourceScores(y, np.stack([perfect, reversed_]), clusters)
    assert s.aucs.tolist() == [1.0, 0.0] and s.auc == 0.5
    c = LosoCandidate("x", 0, {"a": s, "b": SourceScores(y, np.stack([perfect, perfect]), clusters)})
    assert c.score == 0.75 and c.worst == ("a", 0.5) and c.seed_scores.tolist() == [1.0, 0.5]


def test_clear_winner_leads_and_a_weaker_recipe_is_not_eligible():
    rng = np.random.default_rng(0)
    strong = _candidate("strong", 3, [3, 3, 3, 3], rng)
    weak = _candidate("weak", 0, [0.8, 0.8, 0.8, 0.8], rng)
    choice = choose_by_loso([weak, strong], n_boot=300)
    assert choice.leader is strong and choice.chosen is strong
    row = next(r for r in choice.rows if r.name == "weak")
    assert not row.close and not row.eligible and row.ci[0] > 0


def test_indistinguishable_candidate_with_fewer_options_is_chosen():
    rng = np.random.default_rng(1)
    # two recipes of the same strength trained apart: the better-scoring one carries more options
    x = _candidate("x", 0, [1.5, 1.5, 1.5, 1.5], rng, seed_noise=0.3)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    z = LosoCandidate("z", 0, {k: SourceScores(s.y, 1 / (1 + np.exp(-(logit(s.P) + rng.normal(0, 0.3, s.P.shape)))),
                                               s.clusters) for k, s in x.sources.items()})
    leader, simple = (x, z) if x.score >= z.score else (z, x)
    leader.name, leader.n_options, simple.name, simple.n_options = "more options", 3, "simple", 1
    choice = choose_by_loso([leader, simple], n_boot=300)
    row = next(r for r in choice.rows if r.name == "simple")
    assert row.ci[0] <= 0 <= row.ci[1] and row.eligible
    assert choice.leader is leader and choice.chosen is simple


def test_a_recipe_that_fails_one_hospital_is_not_eligible_even_when_close_on_average():
    rng = np.random.default_rng(2)
    leader = _candidate("even", 3, [1.6, 1.6, 1.6, 1.6], rng)
    uneven = _candidate("uneven", 0, [2.6, 2.6, 2.6, 0.3], rng)
    choice = choose_by_loso([leader, uneven], n_boot=300)
    row = next(r for r in choice.rows if r.name == "uneven")
    if choice.leader is leader:
        assert row.worst_auc < leader.worst[1] - WORST_MARGIN
        assert not row.worst_ok and not row.eligible and choice.chosen is leader
    else:  # constructed so that the means are close: whichever leads, the uneven one cannot be chosen over it
        pytest.fail(f"expected the even recipe to lead: {choice.rows}")


def test_training_noise_widens_the_interval():
    rng = np.random.default_rng(3)
    a = _candidate("a", 0, [2.0] * 4, rng, seeds=3, seed_noise=0.01)
    b = LosoCandidate("b", 0, {k: SourceScores(s.y, s.P - 0.01 * s.y, s.clusters) for k, s in a.sources.items()})
    d, lo, hi = compared(a, b, n_boot=300)
    noisy_b = LosoCandidate("b", 0, b.sources, extra_variance=0.02 ** 2)
    d2, lo2, hi2 = compared(a, noisy_b, n_boot=300)
    assert d == d2 and (hi2 - lo2) > (hi - lo) + 0.05
    with pytest.raises(ValueError, match="different sources"):
        compared(a, LosoCandidate("c", 0, {"a": a.sources["a"]}))


def _write_run(root, recipe: str, separation: float, rng, seeds=(0, 1, 2), n: int = 150) -> None:
    """runs/loso/RECIPE/loso_predictions.csv as `rcdnet cv --by-source` writes it, for the script's four sources."""
    import csv

    from scripts.loso_search import SOURCES as FOUR

    (root / recipe).mkdir(parents=True)
    with open(root / recipe / "loso_predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "source", "label", "group", "seed", "p_malignant"])
        for h in FOUR:
            y, clusters = _labels(n)
            base = y * separation + rng.normal(0, 1, n)
            for s in seeds:
                p = 1 / (1 + np.exp(-(base + rng.normal(0, 0.05, n))))
                w.writerows([f"{h}/{i}", h, ["benign", "malignant"][y[i]], f"g{clusters[i]}", s, f"{p[i]:.6f}"]
                            for i in range(n))


def _decided(search, compare, write, values, seed, tmp_path, monkeypatch, capsys) -> str:
    """Write a default ("dflt") and a candidate ("cand") run under ``tmp_path`` with ``values``, point the script's
    ROOT there and return what ``compare("dflt", "cand")`` prints."""
    rng = np.random.default_rng(seed)
    for name, value in zip(("dflt", "cand"), values):
        write(tmp_path, name, value, rng)
    monkeypatch.setattr(search, "ROOT", tmp_path)
    compare("dflt", "cand")
    return capsys.readouterr().out


@pytest.mark.parametrize("candidate_separation, chosen", [(4.0, "cand"), (1.5, "dflt"), (1.45, "dflt")])
def test_step_11_switches_the_default_only_for_an_ensemble_clearly_ahead(tmp_path, monkeypatch, capsys,
                                                                         candidate_separation, chosen):
    """`scripts/loso_search.py ensembles`: far ahead -> the candidate; equal or a hair behind -> the default."""
    import scripts.loso_search as search

    out = _decided(search, search.ensembles, _write_run, (1.5, candidate_separation), 0, tmp_path, monkeypatch, capsys)
    assert f"Decision: **{chosen}**" in out and "dflt (mean of seeds 0, 1, 2) | one ensemble" in out


@pytest.mark.parametrize("candidate_separation, chosen", [(0.6, "dflt"), (1.5, "cand"), (1.45, "cand")])
def test_step_13_keeps_a_costly_option_only_when_it_clearly_helps(tmp_path, monkeypatch, capsys,
                                                                 candidate_separation, chosen):
    """`scripts/loso_search.py cheaper`: the cheaper candidate far behind -> the default; equal or a hair behind ->
    the cheaper one."""
    import scripts.loso_search as search

    out = _decided(search, search.cheaper, _write_run, (1.5, candidate_separation), 0, tmp_path, monkeypatch, capsys)
    assert f"Decision: **{chosen}**" in out and "cand (mean of seeds 0, 1, 2) | one ensemble" in out


@pytest.mark.parametrize("moved, masks, chosen", [((1.5, 4.0), (1.5, 1.5), "cand"),  # ahead around moved boxes
                                                  ((1.5, 4.0), (1.5, 0.6), "dflt"),  # ... but far behind on masks
                                                  ((1.5, 1.5), (1.5, 4.0), "dflt")])  # only ahead on masks' boxes
def test_step_18_needs_the_moved_boxes_ahead_and_the_masks_boxes_not_behind(tmp_path, monkeypatch, capsys, moved,
                                                                           masks, chosen):
    """`scripts/loso_search.py boxes`: both recipes scored around moved boxes (RECIPE@box25) and the masks' boxes."""
    import scripts.loso_search as search

    rng = np.random.default_rng(0)
    for name, value in zip(("dflt@box25", "cand@box25", "dflt", "cand"), moved + masks):
        _write_run(tmp_path, name, value, rng)
    monkeypatch.setattr(search, "ROOT", tmp_path)
    search.boxes("dflt", "cand")
    out = capsys.readouterr().out
    assert f"Decision: **{chosen}**" in out and "cand@box25 (mean of seeds 0, 1, 2) | one ensemble" in out

def _finder_run(root, name: str, hit_rate: float, rng, n: int = 120) -> None:
    """runs/loso_finder/NAME/without-H/H_finder.csv as scripts/finder_search.py reads them: ``hit_rate`` of the
    lesion images found with box IoU >= 0.5, two normal images."""
    from rcdnet.files import write_csv
    from scripts.finder_search import SOURCES as FOUR

    for h in FOUR:
        hit = rng.random(n) < hit_rate
        rows = [{"key": f"{h}/{i:03d}", "group": f"g{i // 2}", "label": ["benign", "malignant"][i % 2], "found": 1,
                 "box_iou": 0.8 if hit[i] else 0.2, "dice": 0.8 if hit[i] else 0.3,
                 "p_found_box": 0.3 + 0.3 * (i % 2) + rng.normal(0, 0.2)} for i in range(n)]
        rows += [{"key": f"{h}/n{i}", "group": f"n{i}", "label": "normal", "found": i} for i in range(2)]
        (root / name / f"without-{h}").mkdir(parents=True)
        write_csv(root / name / f"without-{h}" / f"{h}_finder.csv", rows)


@pytest.mark.parametrize("rate, chosen", [(0.9, "cand"), (0.6, "dflt"), (0.55, "dflt")])
def test_the_finder_rule_takes_a_candidate_only_when_clearly_ahead(tmp_path, monkeypatch, capsys, rate, chosen):
    """`scripts/finder_search.py versus`: the interval of the mean IoU >= 0.5 share, paired over the same images."""
    import scripts.finder_search as search

    out = _decided(search, search.versus, _finder_run, (0.6, rate), 1, tmp_path, monkeypatch, capsys)
    assert f"Decision: **{chosen}**" in out and "| dflt | busi | 120 |" in out and "0.500 (2)" in out


def test_the_paired_interval_is_centred_on_the_mean_difference():
    from scripts.finder_search import paired_interval

    rng = np.random.default_rng(0)
    a = {h: (rng.random(200), np.arange(200) // 2) for h in "wxyz"}
    shifted = {h: (v + 0.1, c) for h, (v, c) in a.items()}
    d, lo, hi = paired_interval(a, shifted)
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)  # a constant shift
    d, lo, hi = paired_interval(a, {h: (rng.random(200), c) for h, (_, c) in a.items()})
    assert lo < d < hi and lo < 0 < hi  # two unrelated draws of the same rate: no difference


@pytest.mark.parametrize("ece_after, auc_after, helps", [
    ((0.05, 0.05, 0.05, 0.20), (0.89, 0.86, 0.85, 0.89), True),    # 3 of 4 better, AUC held
    ((0.05, 0.05, 0.20, 0.20), (0.89, 0.86, 0.85, 0.89), False),   # only 2 better
    ((0.05, 0.05, 0.05, 0.05), (0.89, 0.86, 0.82, 0.89), False),   # one hospital's AUC falls 0.03
    ((0.05, 0.05, 0.05, 0.05), (0.875, 0.845, 0.835, 0.875), False)])  # the mean AUC falls 0.015
def test_step_15_takes_adabn_only_when_it_calibrates_and_keeps_the_auc(ece_after, auc_after, helps):
    """`scripts/loso_adabn.py`: calibration error lower at >= 3 of 4 hospitals, mean AUC down <= 0.01, none > 0.02."""
    from types import SimpleNamespace

    from scripts.loso_adabn import decide

    plain = {h: SimpleNamespace(ensemble_ece=0.10, ensemble_auc=a) for h, a in zip(SOURCES, (0.89, 0.86, 0.85, 0.89))}
    adapted = {h: SimpleNamespace(ensemble_ece=e, ensemble_auc=a) for h, e, a in zip(SOURCES, ece_after, auc_after)}
    ok, text = decide(plain, adapted)
    assert ok is helps and ("becomes the first step" in text) is helps

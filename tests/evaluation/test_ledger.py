"""The ledger of external scorings: every evaluation on a labelled set outside the training sources appends one
row, and what is published says how many times that set had been scored before."""

import csv
import json

from rcdnet.cli import main
from rcdnet.evaluation.ledger import LEDGER_NAME, ledger_path, record, scorings
from tests.conftest import BUSI


class _Model:
    source = "runs/x/checkpoints/best.pt"
    config = None


def test_rows_count_per_set_and_the_nearest_ledger_above_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("RCDNET_LEDGER", raising=False)
    first = record(tmp_path / "runs" / "a", "udiat", 163, 0.78, _Model(), "abc1234")
    assert first["ledger"] == str(tmp_path / "runs" / LEDGER_NAME) and first["scored_before"] == 0
    assert first["scored_before_ledger"] >= 60  # the count from before the ledger (docs/decisions.md)
    assert record(tmp_path / "runs" / "b", "other", 10, None, _Model(), "abc1234")["scored_before"] == 0
    # a run deeper in the same tree finds the same ledger; a second udiat scoring counts the first
    deep = tmp_path / "runs" / "selection" / "paper" / "fold"
    assert ledger_path(deep) == tmp_path / "runs" / LEDGER_NAME
    assert record(deep, "udiat", 163, 0.80, _Model(), "def5678")["scored_before"] == 1
    rows = list(csv.DictReader((tmp_path / "runs" / LEDGER_NAME).open()))
    assert [(r["dataset"], r["auc"], r["commit"]) for r in rows] == [
        ("udiat", "0.7800", "abc1234"), ("other", "", "abc1234"), ("udiat", "0.8000", "def5678")]
    assert scorings(tmp_path / "runs" / LEDGER_NAME, "udiat") == 2
    # no ledger yet: the nearest folder named runs holds the new one, else the output folder's parent
    assert ledger_path(tmp_path / "proj" / "runs" / "main" / "eval") == tmp_path / "proj" / "runs" / LEDGER_NAME
    assert ledger_path(tmp_path / "x" / "out") == tmp_path / "x" / LEDGER_NAME
    monkeypatch.setenv("RCDNET_LEDGER", str(tmp_path / "elsewhere.csv"))
    assert ledger_path(deep) == tmp_path / "elsewhere.csv"


def test_evaluate_appends_external_sets_only(untrained_checkpoint, tmp_path, cache_dir, capsys, monkeypatch):
    monkeypatch.delenv("RCDNET_LEDGER", raising=False)
    table = tmp_path / "site.csv"
    table.write_text("path,label\n" + "".join(f"{BUSI / c / f'{c} ({i}).png'},{c}\n"
                                              for c in ("benign", "malignant") for i in (5, 6)))
    for k in range(2):
        assert main(["evaluate", str(untrained_checkpoint), "--csv", str(table), "--out", str(tmp_path / "ev"),
                     "--bootstrap", "20", "--cache", str(cache_dir), "--quiet"]) == 0
        assert f"site had been scored {k} times in the ledger" in capsys.readouterr().out
    m = json.loads((tmp_path / "ev" / "site_metrics.json").read_text())
    assert m["external_scorings"]["scored_before"] == 1
    rows = list(csv.DictReader((tmp_path / LEDGER_NAME).open()))
    assert len(rows) == 2 and rows[0]["run"] == str(untrained_checkpoint) and len(rows[0]["config_hash"]) == 12
    assert float(rows[1]["auc"]) == round(m["operating_points"]["default"]["auc"]["value"], 4)
    # the run's own validation split is not an external set: no row
    assert main(["evaluate", str(untrained_checkpoint), "--dataset", "val", "--out", str(tmp_path / "ev"),
                 "--bootstrap", "20", "--cache", str(cache_dir), "--quiet"]) == 0
    assert scorings(tmp_path / LEDGER_NAME, "val") == 0 and "ledger" not in capsys.readouterr().out


def test_an_unwritable_ledger_loses_no_evaluation_and_says_so(tmp_path, monkeypatch):
    from rcdnet.evaluation.ledger import sentence

    blocked = tmp_path / "ro"
    blocked.mkdir()
    (blocked / LEDGER_NAME).mkdir()  # a folder where the file should be: cannot be opened for appending
    monkeypatch.setenv("RCDNET_LEDGER", str(blocked / LEDGER_NAME))
    entry = record(tmp_path / "out", "udiat", 163, 0.78, _Model(), "abc1234")
    assert entry["scored_before"] is None and str(blocked / LEDGER_NAME) in entry["error"]
    assert "NOT in the ledger" in sentence("udiat", entry)

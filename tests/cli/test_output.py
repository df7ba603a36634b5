"""One rule for where every subcommand writes."""

from pathlib import Path

from rcdnet.cli.commands import output_dir


def test_output_folder_rule(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert output_dir("somewhere", "evaluate", str(run)) == Path("somewhere")
    assert output_dir(None, "evaluate", str(run)) == run / "eval"
    assert output_dir(None, "robustness", str(run / "checkpoints" / "best.pt")) == run / "robustness"
    assert output_dir(None, "explain", str(tmp_path / "model.onnx")) == tmp_path / "explain"
    assert output_dir(None, "train") == Path("runs/train")
    assert output_dir(None, "audit") == Path("runs/audit")
    assert output_dir(None, "benchmark-cpu") == Path("runs/benchmark-cpu")


def test_json_outputs_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import json
    import os

    import pytest

    from rcdnet.files import write_json

    target = tmp_path / "m_metrics.json"
    write_json(target, {"auc": 0.9})
    assert json.loads(target.read_text()) == {"auc": 0.9}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # the disk fills before the new file takes the old one's place
    with pytest.raises(OSError, match="m_metrics.json: could not be written"):
        write_json(target, {"auc": 0.5})
    assert json.loads(target.read_text()) == {"auc": 0.9}  # the earlier file whole, no half-written one
    assert [p.name for p in tmp_path.iterdir()] == ["m_metrics.json"]  # and no temporary file left


def test_csv_outputs_are_written_whole_and_name_their_file_on_failure(tmp_path, monkeypatch):
    import os

    import pytest

    from rcdnet.files import write_csv

    target = tmp_path / "val_predictions.csv"
    write_csv(target, [{"key": "a", "p": 0.5}])
    assert target.read_text().splitlines() == ["key,p", "a,0.5"] and oct(target.stat().st_mode)[-3:] == "644"
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="val_predictions.csv: could not be written"):
        write_csv(target, [{"key": "b", "p": 0.1}])
    assert target.read_text().splitlines() == ["key,p", "a,0.5"] and len(list(tmp_path.iterdir())) == 1

"""``--resume`` says which settings of the command it ignores, and a finished run is neither trained nor scored again
(no new rows in the ledger of external scorings)."""

import json

import pytest
import yaml

from rcdnet.config import load_config, save_config
from rcdnet.data.readers import DatasetError
from rcdnet.pipeline import open_run, run


def test_resume_names_the_settings_it_ignores(tmp_path, capsys):
    saved = load_config(None, {"train": {"epochs": 3}})
    save_config(saved, tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    asked = saved.updated({"train": {"lr": 3e-4}, "data": {"sources": ["busi"], "external": ["udiat"]}})
    cfg, _ = open_run(tmp_path, asked, resume=True)
    assert cfg.to_dict() == saved.to_dict()  # the run's own settings win ...
    err = capsys.readouterr().err
    assert "NOT used" in err and "train.lr: 0.001 -> 0.0003" in err and "data.sources" in err  # ... and it says so
    open_run(tmp_path, saved, resume=True)
    assert "NOT used" not in capsys.readouterr().err


def test_a_finished_run_is_not_trained_or_scored_again(tmp_path, capsys):
    cfg = load_config(None, {"train": {"epochs": 2}})
    save_config(cfg, tmp_path / "config.yaml")
    (tmp_path / "history.json").write_text(json.dumps([{"epoch": 1}, {"epoch": 2}]))
    (tmp_path / "metrics.json").write_text(json.dumps({"results": {}, "marker": 7}))
    # no data root at all: a finished run returns its saved metrics before anything is read
    assert run(cfg, tmp_path / "no-data-here", tmp_path, resume=True)["marker"] == 7
    assert "finished earlier" in capsys.readouterr().out
    (tmp_path / "history.json").write_text(json.dumps([{"epoch": 1}]))  # one epoch short: not finished
    with pytest.raises(DatasetError, match="no-data-here"):  # it goes on training, and stops at the missing data
        run(cfg, tmp_path / "no-data-here", tmp_path, resume=True)


def test_a_run_stopped_early_is_finished_and_old_runs_keep_their_behaviour(tmp_path, capsys):
    from rcdnet.config import read_saved_config

    cfg = load_config(None, {"train": {"epochs": 10, "members": 2, "patience": 3}})
    save_config(cfg, tmp_path / "config.yaml")
    (tmp_path / "metrics.json").write_text(json.dumps({"results": {}, "marker": 7}))
    stopped = [{"member": 0, "epoch": e, "best_epoch": 2} for e in range(1, 6)]  # 3 epochs after its best
    running = [{"member": 1, "epoch": e, "best_epoch": e - 1} for e in range(1, 6)]  # improved 1 epoch ago
    (tmp_path / "history.json").write_text(json.dumps(stopped + running))
    with pytest.raises(DatasetError):  # member 1 has not stopped: the run goes on training
        run(cfg, tmp_path / "no-data-here", tmp_path, resume=True)
    (tmp_path / "history.json").write_text(json.dumps(stopped + [{**h, "member": 1} for h in stopped]))
    assert run(cfg, tmp_path / "no-data-here", tmp_path, resume=True)["marker"] == 7
    # a run saved before members and patience existed was one model trained every epoch, and reads back as one
    old = cfg.to_dict()
    del old["train"]["members"], old["train"]["patience"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    train = read_saved_config(tmp_path / "old.yaml").train
    assert (train.members, train.patience) == (1, 0)

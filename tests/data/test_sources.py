"""Several training sources: the BUS-UCLM reader on the real files, pooling, patient groups and the split."""

import shutil
from collections import Counter

import numpy as np
import pytest

from rcdnet.config import config_from_dict
from rcdnet.data.decode import read_image
from rcdnet.data.duplicates import DuplicatePair, group_pool
from rcdnet.data.readers import DatasetError, read_bus_uclm
from rcdnet.data.sources import load_sources
from rcdnet.data.split import split_train_val
from rcdnet.training.dataset import SourceBalancedSampler


def test_bus_uclm_reader_on_the_real_files(data_root):
    samples, problems = read_bus_uclm(data_root)
    assert not problems
    assert Counter(s.label for s in samples) == {"benign": 174, "malignant": 90}
    assert len({s.group for s in samples}) == 36
    assert all(s.group == s.path.stem.rsplit("_", 1)[0] and len(s.mask_paths) == 1 for s in samples)
    assert sum(s.extra["doppler"] for s in samples) == 36 and sum(s.extra["marks"] for s in samples) == 144
    # the mask's colour (green benign, red malignant) agrees with INFO.csv's label on every image
    for s in samples:
        rgb = read_image(s.mask_paths[0]).reshape(-1, 3).astype(int)
        red, green = int((rgb[:, 0] > 127).sum()), int((rgb[:, 1] > 127).sum())
        assert (red > green) == (s.label == "malignant"), s.key
    # grayscale (B-mode) and RGB (Doppler) files both read as RGB
    modes = {read_image(s.path).ndim for s in samples[:3]} | {read_image(next(
        s for s in samples if s.extra["doppler"]).path).ndim}
    assert modes == {3}


def test_bus_uclm_label_file_problems(tmp_path, data_root):
    (tmp_path / "BUS-UCLM").mkdir()
    with pytest.raises(DatasetError, match="INFO.csv"):
        read_bus_uclm(tmp_path)
    (tmp_path / "BUS-UCLM" / "INFO.csv").write_text("Image,Label\nA_000.png,Benign\n")
    with pytest.raises(DatasetError, match="semicolon"):
        read_bus_uclm(tmp_path)


def test_pooled_sources_keep_their_source_and_never_share_keys(data_root, small_dataset, tmp_path):
    samples, _ = load_sources(["busi", "bus-uclm", str(small_dataset)], data_root)
    by = Counter(s.source for s in samples)
    assert by == {"busi": 647, "bus-uclm": 264, "folder": 12}
    assert len({s.key for s in samples}) == len(samples)
    assert all(s.key.startswith(f"{s.source}/") for s in samples)
    assert {s.group for s in samples if s.source == "bus-uclm"} == {
        f"bus-uclm/{s.path.stem.rsplit('_', 1)[0]}" for s in samples if s.source == "bus-uclm"}
    with pytest.raises(DatasetError, match="both named"):
        load_sources(["busi", "busi"], data_root)
    with pytest.raises(DatasetError, match="neither a dataset name"):
        load_sources(["busi", str(tmp_path / "nowhere.csv")], data_root)


def test_no_patient_crosses_the_split_and_every_source_is_stratified(data_root):
    samples, _ = load_sources(["busi", "bus-uclm"], data_root)
    conflicts = group_pool(samples, [])
    assert not conflicts  # 5 BUS-UCLM patients have a benign and a malignant lesion: not a label conflict
    split = split_train_val(samples, {s.key: s.group for s in samples}, 0.3, seed=0)
    for g in {s.group for s in samples}:
        assert len({split[s.key] for s in samples if s.group == g}) == 1, g
    for (source, label), n in Counter((s.source, s.label) for s in samples).items():
        n_val = sum(split[s.key] == "val" for s in samples if (s.source, s.label) == (source, label))
        assert 0.2 < n_val / n < 0.4, (source, label, n_val, n)


def test_label_conflicts_come_from_duplicates_not_patients(data_root):
    samples, _ = read_bus_uclm(data_root)
    patient = next(g for g in {s.group for s in samples} if len({s.label for s in samples if s.group == g}) == 2)
    benign, malignant = (next(s for s in samples if s.group == patient and s.label == c)
                         for c in ("benign", "malignant"))
    assert not group_pool(samples, [])
    conflicts = group_pool(samples, [DuplicatePair(benign.key, malignant.key, "exact", 0, 0, 1.0, 1.0)])
    assert [sorted(s.key for s in m) for m in conflicts.values()] == [sorted([benign.key, malignant.key])]


def test_source_balanced_batches():
    sources = ["a"] * 900 + ["b"] * 100
    sampler = SourceBalancedSampler(sources, seed=3)
    sampler.set_epoch(0)
    first = sampler.draws()
    share_b = np.mean([sources[i] == "b" for i in first])
    assert 0.45 < share_b < 0.55  # each source equally often, whatever its size
    again = SourceBalancedSampler(sources, seed=3)
    again.set_epoch(0)
    assert np.array_equal(again.draws(), first)  # seeded by (seed, epoch) alone: a resumed run repeats itself
    sampler.set_epoch(1)
    assert not np.array_equal(sampler.draws(), first)
    ranks = [SourceBalancedSampler(sources, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    shards = [list(r) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 500
    assert sorted(shards[0] + shards[1]) == sorted(first.tolist())


def test_a_config_saved_with_one_dataset_reads_as_one_source():
    cfg = config_from_dict({"data": {"dataset": "busi", "image_size": 224}}, "old run")
    assert cfg.data.sources == ("busi",) and cfg.data.image_size == 224


def test_audit_reports_each_source_with_its_overlays_and_patients(tmp_path, data_root, cache_dir):
    from rcdnet.data.audit import run_audit

    src, dst = data_root / "BUS-UCLM", tmp_path / "root" / "BUS-UCLM"
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    lines = (src / "INFO.csv").read_text().splitlines()
    first_malignant = next(line.split("_")[0] for line in lines[1:] if line.split(";")[2] == "Malignant")
    keep = [line for line in lines[1:] if line.split("_")[0] in ("ALWI", first_malignant)]
    (dst / "INFO.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    for line in keep:
        name = line.split(";")[0]
        for sub in ("images", "masks"):
            shutil.copy(src / sub / name, dst / sub / name)
    res = run_audit(tmp_path / "root", tmp_path / "out", cache_dir=cache_dir, progress=False)
    summary = res["summaries"]["bus-uclm"]
    assert summary["images"] == len(keep)
    marked = sum(line.split(";")[4] == "Yes" for line in keep)
    assert summary["overlay detector vs the dataset's own Marks column"].endswith(f"({marked} marked)")
    per_class = summary["overlays per class (marks/text, colour)"]
    assert per_class.startswith("benign: ") and "malignant: " in per_class
    # the patient is the group: every image of one patient lands in one group, so two patients make two groups
    assert len({r["group"] for r in res["rows"] if r["dataset"] == "bus-uclm"}) == 2
    assert summary["patients named by the source"] == summary["split groups (duplicates and patients)"] == 2
    assert res["table"][-1][""] == "overlay detector vs the dataset's own Marks column"

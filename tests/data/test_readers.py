import shutil

import numpy as np
import pytest
from PIL import Image

from rcdnet.data.decode import ImageReadError, read_image, read_mask
from rcdnet.data.readers import (
    DatasetError,
    read_busi,
    read_folder,
    read_udiat,
    resolve_data_root,
)
from rcdnet.data.samples import CLASSES_3
from rcdnet.data.user_csv import read_csv
from tests.conftest import BUSI, UDIAT


def test_busi_counts_and_masks(data_root):
    samples, problems = read_busi(data_root, CLASSES_3)
    counts = {c: sum(s.label == c for s in samples) for c in CLASSES_3}
    assert counts == {"normal": 133, "benign": 437, "malignant": 210}
    assert sum(len(s.mask_paths) > 1 for s in samples) == 17
    assert not [p for p in problems if "mask" in p.problem]
    default, _ = read_busi(data_root)
    assert {s.label for s in default} == {"benign", "malignant"} and len(default) == 647


def test_busi_multi_mask_images_are_merged(data_root):
    samples, _ = read_busi(data_root)
    s = next(s for s in samples if len(s.mask_paths) > 1)
    img = read_image(s.path)
    merged = read_mask(s.mask_paths, img.shape[:2])
    singles = [read_mask((p,), img.shape[:2]) for p in s.mask_paths]
    assert merged.sum() >= max(m.sum() for m in singles)
    assert np.array_equal(merged, np.logical_or.reduce(singles))


def test_grayscale_and_rgb_files_read_alike(tmp_path, data_root):
    gray_file = BUSI / "benign" / "benign (1).png"
    assert Image.open(gray_file).mode == "L"
    Image.open(gray_file).convert("RGB").save(tmp_path / "rgb.png")
    assert np.array_equal(read_image(gray_file), read_image(tmp_path / "rgb.png"))


def test_udiat_labels_from_xlsx(data_root):
    samples, problems = read_udiat(data_root)
    assert len(samples) == 163 and not problems
    assert sum(s.label == "benign" for s in samples) == 109
    assert sum(s.label == "malignant" for s in samples) == 54
    assert all(len(s.mask_paths) == 1 for s in samples)
    assert {s.extra["diagnosis"] for s in samples if s.label == "malignant"} >= {"IDC", "DCIS"}


def test_udiat_missing_or_malformed_xlsx(tmp_path, data_root):
    root = tmp_path / "BUS"
    shutil.copytree(UDIAT / "original", root / "original")
    with pytest.raises(DatasetError, match="DatasetB.xlsx.*missing"):
        read_udiat(root)
    (root / "DatasetB.xlsx").write_text("not a workbook")
    with pytest.raises(DatasetError, match="DatasetB.xlsx: not a readable"):
        read_udiat(root)


def test_udiat_unknown_label_is_reported(tmp_path, data_root):
    import openpyxl

    root = tmp_path / "BUS"
    shutil.copytree(UDIAT / "original", root / "original")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Hoja1"
    ws.append(["Image", "Type", "Diagnosis"])
    ws.append(["000001", "Benign", "CYST"])
    ws.append(["000002", "Maybe", "?"])
    wb.save(root / "DatasetB.xlsx")
    samples, problems = read_udiat(root)
    assert [s.key for s in samples] == ["udiat/000001"]
    assert any("unknown label 'Maybe'" in p.problem for p in problems)
    assert any("not listed" in p.problem for p in problems)  # the other 161 images have no label


def test_folder_and_csv_readers(small_dataset, tmp_path):
    samples, problems = read_folder(small_dataset)
    assert len(samples) == 12 and not problems
    assert all(len(s.mask_paths) == 1 for s in samples)
    csv = small_dataset / "list.csv"
    csv.write_text("path,label,group\nbenign/benign (1).png,0,a\nmalignant/malignant (1).png,malignant,a\n"
                   "benign/benign (2).png,cancer,\nbenign/missing.png,1,\n")
    samples, problems = read_csv(csv)
    assert [(s.label, s.group) for s in samples] == [("benign", "a"), ("malignant", "a")]
    assert any("unknown label 'cancer'" in p.problem and "line 4" in p.path for p in problems)
    assert any("missing.png" in p.path for p in problems)
    (tmp_path / "bad.csv").write_text("file,diagnosis\nx.png,benign\n")
    with pytest.raises(DatasetError, match="bad.csv: needs a header"):
        read_csv(tmp_path / "bad.csv")


def test_busi_layout_problems_are_reported_not_fatal(tmp_path, data_root):
    root = tmp_path / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
    for i in (1, 2):
        shutil.copy(BUSI / "benign" / f"benign ({i}).png", root / "benign")
    shutil.copy(BUSI / "benign" / "benign (1)_mask.png", root / "benign")
    shutil.copy(BUSI / "benign" / "benign (3)_mask.png", root / "benign")
    (root / "benign" / "notes.txt").write_text("hello")
    samples, problems = read_busi(root)
    text = "\n".join(str(p) for p in problems)
    assert len(samples) == 2
    assert "benign (2).png: image without a mask" in text
    assert "benign (3)_mask.png: mask without an image" in text
    assert "malignant: class folder holds no images" in text
    assert "notes.txt: not an image file" in text


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"hello world", "not an image"),
                                           (None, "corrupt or truncated")])
def test_bad_image_files_name_the_file(tmp_path, data_root, content, match):
    f = tmp_path / "bad.png"
    if content is None:  # a real PNG cut in half
        data = (BUSI / "benign" / "benign (1).png").read_bytes()
        content = data[: len(data) // 2]
    f.write_bytes(content)
    with pytest.raises(ImageReadError, match=rf"bad.png: .*{match}"):
        read_image(f)


def test_mask_of_another_size_is_an_error(tmp_path, data_root):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ImageReadError, match="m.png: mask is 10x10 but its image is 30x20"):
        read_mask([tmp_path / "m.png"], (20, 30))


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("RCDNET_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path.resolve()
    with pytest.raises(DatasetError, match="data folder not found"):
        resolve_data_root(tmp_path / "nope")

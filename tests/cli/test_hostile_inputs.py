"""Hostile and careless input through the commands: image bombs, files of every type read alike, outputs that
cannot be written, one-class sets, argument order, empty folders, symlink loops, CSV paths leaving their folder."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rcdnet.cli import main
from rcdnet.data.decode import (
    ImageReadError,
    TooManyPixels,
    kind_of,
    read_image,
    to_gray,
)
from tests.conftest import BUSI
from tests.data.test_decode import make_dicom

GOOD = BUSI / "malignant" / "malignant (3).png"



def _evaluate_csv(checkpoint, csv, out, cache_dir, bootstrap: int) -> dict:
    """`rcdnet evaluate CHECKPOINT --csv CSV` (exit 0 asserted) and the metrics file it writes."""
    assert main(["evaluate", str(checkpoint), "--csv", str(csv), "--out", str(out), "--bootstrap", str(bootstrap),
                 "--cache", str(cache_dir), "--quiet"]) == 0
    return json.loads((out / f"{csv.stem}_metrics.json").read_text())

def test_image_bomb_is_refused_from_its_header_and_the_limit_is_a_setting(tmp_path, bomb_png, data_root):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png)
    with pytest.raises(TooManyPixels, match=r"bomb\.png: 12000x12000 pixels \(144 MP\) is over the limit of 40 MP"):
        read_image(bomb)
    assert read_image(bomb, max_pixels=150_000_000).shape == (12000, 12000, 3)  # the limit, not the file, refused it


def test_one_decoder_types_by_content_and_checks_every_depth(tmp_path, data_root):
    rgb = read_image(GOOD)
    disguised = tmp_path / "scan.dcm"  # a PNG with a DICOM name
    disguised.write_bytes(GOOD.read_bytes())
    assert kind_of(disguised) == "image" and np.array_equal(read_image(disguised), rgb)
    dcm = make_dicom(tmp_path / "study.png", to_gray(rgb))  # a DICOM with a PNG name
    assert kind_of(dcm) == "dicom" and np.array_equal(read_image(dcm)[..., 0], to_gray(rgb))
    Image.fromarray(np.array([[40000]], np.uint16)).save(tmp_path / "tiny16.png")
    with pytest.raises(ImageReadError, match=r"tiny16\.png: image too small \(1x1"):
        read_image(tmp_path / "tiny16.png")
    clip = make_dicom(tmp_path / "cine.dcm", np.stack([to_gray(rgb)[:200, :200]] * 3))
    with pytest.raises(ImageReadError, match="holds several frames"):
        read_image(clip)
    loop = tmp_path / "loop.png"
    os.symlink(tmp_path / "loop2.png", loop)
    os.symlink(loop, tmp_path / "loop2.png")
    with pytest.raises(ImageReadError, match=r"loop\.png: symbolic link loop"):
        read_image(loop)


def test_bomb_in_predict_and_evaluate_batches_is_skipped_and_the_rest_kept(untrained_checkpoint, tmp_path, bomb_png,
                                                                          cache_dir, capsys, data_root):
    (tmp_path / "bomb.png").write_bytes(bomb_png)
    make_dicom(tmp_path / "case.dcm", to_gray(read_image(BUSI / "benign" / "benign (3).png")))
    out = tmp_path / "new" / "folder" / "pred.csv"  # a missing folder is created
    assert main(["predict", str(untrained_checkpoint), str(tmp_path / "bomb.png"), str(GOOD), "--format", "csv",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "bomb.png: 12000x12000 pixels" in err and "1 predicted, 1 skipped" in err
    assert GOOD.name in out.read_text()
    csv = tmp_path / "set.csv"
    csv.write_text(f"path,label\nbomb.png,malignant\ncase.dcm,benign\n{GOOD},malignant\n"
                   f"{BUSI / 'benign' / 'benign (4).png'},benign\n")
    m = _evaluate_csv(untrained_checkpoint, csv, tmp_path / "ev", cache_dir, 20)

    assert m["n"] == 3 and len(m["skipped_files"]) == 1 and "bomb.png" in m["skipped_files"][0]  # DICOM read


def test_one_class_set_keeps_its_metrics_and_says_auc_is_undefined(untrained_checkpoint, tmp_path, cache_dir, capsys,
                                                                   data_root):
    csv = tmp_path / "benign.csv"
    csv.write_text("path,label\n" + "".join(f"{BUSI / 'benign' / f'benign ({i}).png'},benign\n" for i in (5, 6, 7)))
    assert main(["evaluate", str(untrained_checkpoint), "--csv", str(csv), "--out", str(tmp_path / "ev"),
                 "--bootstrap", "20", "--cache", str(cache_dir), "--quiet"]) == 0
    captured = capsys.readouterr()
    m = json.loads((tmp_path / "ev" / "benign_metrics.json").read_text())  # strict JSON: no NaN
    d = m["operating_points"]["default"]
    assert d["auc"]["value"] is None and d["sensitivity"]["value"] is None and d["specificity"]["value"] is not None
    assert "AUC, the ROC curve and the sensitivity are undefined" in m["note"] and "undefined" in captured.err
    assert (tmp_path / "ev" / "benign_confusion.png").is_file() and (tmp_path / "ev" / "benign_predictions.csv").is_file()


def test_read_only_output_fails_before_the_work(untrained_checkpoint, tmp_path, capsys, data_root):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root writes into any folder it may change: /proc takes no new files from anyone
        ro = Path("/proc/rcdnet-read-only")
    assert main(["predict", str(untrained_checkpoint), str(GOOD), "--out", str(ro / "p.csv")]) == 2
    assert main(["train", "--out", str(ro / "run"), "--epochs", "1"]) == 2
    assert capsys.readouterr().err.count("cannot write output there") == 2


def test_output_that_cannot_be_a_folder_fails_before_the_work(untrained_checkpoint, tmp_path, capsys, data_root):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert main(["predict", str(untrained_checkpoint), str(GOOD), "--out", str(blocker / "p.csv")]) == 2
    assert main(["train", "--out", str(blocker / "run"), "--epochs", "1"]) == 2
    assert main(["evaluate", str(untrained_checkpoint), "--dataset", "val", "--out", str(blocker / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.count("cannot write output there") == 3 and "Traceback" not in err


def test_options_among_files_empty_folders_and_onnx_for_heat_maps(untrained_checkpoint, exported_onnx, tmp_path,
                                                                  capsys, data_root):
    assert main(["explain", str(untrained_checkpoint), "--out", str(tmp_path / "x"), str(GOOD), "--quiet"]) == 0
    assert len(list((tmp_path / "x").glob("*.png"))) == 1 and (tmp_path / "x" / "explain.csv").is_file()
    (tmp_path / "empty").mkdir()
    for cmd in ("explain", "predict"):
        assert main([cmd, str(untrained_checkpoint), str(tmp_path / "empty")]) == 2
        assert "empty: no images found" in capsys.readouterr().err
    assert main(["explain", str(exported_onnx), str(GOOD), "--out", str(tmp_path / "y")]) == 2
    assert "heat maps need a PyTorch checkpoint" in capsys.readouterr().err


def test_csv_paths_leaving_the_csv_folder_are_read_and_reported(untrained_checkpoint, tmp_path, cache_dir, capsys,
                                                                data_root):
    (tmp_path / "images").mkdir()
    for name in ("benign (8).png", "benign (9).png"):
        shutil.copy(BUSI / "benign" / name, tmp_path / "images" / name)
    shutil.copy(GOOD, tmp_path / "images" / "m.png")
    (tmp_path / "lists").mkdir()
    csv = tmp_path / "lists" / "set.csv"
    csv.write_text("path,label\n../images/benign (8).png,benign\n../images/benign (9).png,benign\n"
                   "../images/m.png,malignant\n")
    assert main(["evaluate", str(untrained_checkpoint), "--csv", str(csv), "--out", str(tmp_path / "ev"),
                 "--bootstrap", "20", "--cache", str(cache_dir), "--quiet"]) == 0
    assert "3 CSV rows use relative paths that leave the CSV's folder" in capsys.readouterr().err


def test_audit_names_a_bomb_as_a_problem_and_goes_on(tmp_path, bomb_png, data_root):
    from rcdnet.data.audit import inspect_sample
    from rcdnet.data.samples import Sample

    (tmp_path / "bomb.png").write_bytes(bomb_png)
    bomb = inspect_sample(Sample(tmp_path / "bomb.png", "benign", "bomb", "csv"))
    good = inspect_sample(Sample(GOOD, "malignant", "good", "csv"))
    assert "bomb.png: 12000x12000 pixels (144 MP) is over the limit" in bomb["problem"] and bomb["width"] == ""
    assert good["problem"] == "" and good["width"] > 0 and good["mode"] == "L"


def test_copied_csv_rows_are_one_case_and_a_bad_csv_names_itself(untrained_checkpoint, tmp_path, cache_dir, capsys,
                                                                 data_root):
    import shutil

    for cls, i in (("benign", 8), ("malignant", 8)):
        shutil.copy(BUSI / cls / f"{cls} ({i}).png", tmp_path / f"{cls}.png")
    shutil.copy(tmp_path / "benign.png", tmp_path / "renamed.png")  # the same file under another name
    csv = tmp_path / "copies.csv"
    csv.write_text("path,label\n" + "benign.png,benign\n" * 40 + "renamed.png,benign\n" + "malignant.png,malignant\n"
                   "malignant.png,malignant\n")
    m = _evaluate_csv(untrained_checkpoint, csv, tmp_path / "ev", cache_dir, 50)

    assert m["n"] == 43 and m["ci_resampling"].startswith("groups (2 patients / duplicate groups for 43 images)")
    assert "note: 43 CSV rows repeat files with identical content" in capsys.readouterr().err
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("path,label\nb\xe9nign.png,benign\n".encode("latin-1"))
    assert main(["evaluate", str(untrained_checkpoint), "--csv", str(bad), "--out", str(tmp_path / "ev2")]) == 2
    assert "latin1.csv: not UTF-8 text" in capsys.readouterr().err


def test_near_duplicates_in_an_evaluated_set_are_one_case(untrained_checkpoint, tmp_path, cache_dir, data_root):
    """BUSI's benign (4) and benign (321) are one lesion saved twice (found by training's duplicate screening):
    `rcdnet evaluate` gives them one group, so its intervals do not count them as two patients."""
    import csv as csv_module

    csv = tmp_path / "set.csv"
    csv.write_text("path,label\n" + "".join(f"{BUSI / cls / f'{cls} ({i}).png'},{cls}\n"
                                            for cls, i in (("benign", 4), ("benign", 321), ("benign", 8),
                                                           ("malignant", 8))))
    m = _evaluate_csv(untrained_checkpoint, csv, tmp_path / "ev", cache_dir, 20)
    assert m["n"] == 4 and m["ci_resampling"].startswith("groups (3 patients / duplicate groups for 4 images)")
    groups = {r["key"]: r["group"] for r in csv_module.DictReader((tmp_path / "ev" / "set_predictions.csv").open())}
    four, twin = (next(g for k, g in groups.items() if k.endswith(f"benign ({i}).png")) for i in (4, 321))
    assert four == twin and len(set(groups.values())) == 3


def test_a_blank_picture_in_a_csv_is_not_scored_as_a_case(untrained_checkpoint, tmp_path, cache_dir, data_root):
    import cv2

    cv2.imwrite(str(tmp_path / "blank.png"), np.full((300, 400), 200, np.uint8))
    csv = tmp_path / "cases.csv"
    csv.write_text(f"path,label\nblank.png,malignant\n{BUSI / 'benign' / 'benign (9).png'},benign\n"
                   f"{BUSI / 'malignant' / 'malignant (9).png'},malignant\n")
    m = _evaluate_csv(untrained_checkpoint, csv, tmp_path / "ev", cache_dir, 20)

    assert m["n"] == 2 and any("blank.png" in f and "not an ultrasound image" in f for f in m["skipped_files"])

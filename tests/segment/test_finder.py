"""The lesion finder: measurements, regions, its threshold, and the automatic mode of predict / evaluate / serve."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from rcdnet.cli import main
from rcdnet.segment.finder import LesionFinder
from rcdnet.segment.lesions import measure, regions
from rcdnet.segment.model import FILE, build_segmenter, save_segmenter
from rcdnet.segment.train import choose_threshold
from tests.data.test_boxes import _blob_image, _checkpoint


def test_diameters_and_area_of_a_known_ellipse_in_mm():
    region = np.zeros((300, 400), np.uint8)
    cv2.ellipse(region, (200, 150), (60, 30), 30, 0, 360, 1, -1)  # axes 121 x 61 px (edges included), tilted 30 deg
    les = measure(region.astype(bool), 0.9, pixel_mm=0.078)
    assert les.units == "mm"
    assert les.long_diameter == pytest.approx(121 * 0.078, abs=2 * 0.078)
    assert les.short_diameter == pytest.approx(61 * 0.078, abs=2 * 0.078)
    assert les.area == pytest.approx(np.pi * 60.5 * 30.5 * 0.078 ** 2, rel=0.03)
    (x0, y0), (x1, y1) = les.long_axis
    assert np.degrees(np.arctan2(y1 - y0, x1 - x0)) % 180 == pytest.approx(30, abs=3)  # along the long axis
    mask = les.mask(region.shape)  # the outline encloses the region
    assert (mask & region.astype(bool)).sum() / region.sum() > 0.98
    px = measure(region.astype(bool), 0.9)
    assert px.units == "px" and px.long_diameter == pytest.approx(121, abs=2)
    assert set(px.summary()) == {"box", "finder_confidence", "long_diameter_px", "short_diameter_px", "area_px2"}


def test_the_diameters_are_those_of_the_hull_of_every_pixel(data_root):
    """On real lesion masks (one or several regions each), the measurements equal those computed from every pixel's
    corners (the definition), not only from the outline's."""
    from rcdnet.data.decode import read_mask
    from rcdnet.data.sources import load_dataset

    samples = [s for s in load_dataset("busi", data_root)[0] if s.mask_paths][:40]
    for s in samples:
        region = read_mask(s.mask_paths, cv2.imread(str(s.path)).shape[:2])
        ys, xs = np.nonzero(region)
        corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
        hull = cv2.convexHull(corners.astype(np.float32))[:, 0].astype(np.float64)
        longest = np.linalg.norm(hull[:, None] - hull[None], axis=2).max()
        les = measure(region, 1.0)
        assert les.long_diameter == pytest.approx(longest, abs=1e-6), s.key
        assert les.area == region.sum() and les.short_diameter <= les.long_diameter


def test_regions_most_confident_first_small_ones_dropped():
    prob = np.zeros((200, 200), np.float32)
    prob[20:60, 20:60] = 0.7
    prob[100:150, 100:150] = 0.95
    prob[5:7, 190:192] = 0.99  # 4 pixels: under min_area
    found = regions(prob, min_area=5e-4)
    assert [round(c, 2) for _, c in found] == [0.95, 0.7]
    assert regions(prob * 0.4, min_area=5e-4)[0][1] == pytest.approx(0.38)  # nothing reaches 0.5: half the maximum
    assert regions(np.zeros((10, 10), np.float32), 5e-4) == []


def test_the_threshold_keeps_the_target_share_of_lesion_images():
    conf = np.linspace(0.01, 1.0, 100)
    t = choose_threshold(conf, 0.95)
    assert np.mean(conf >= t) >= 0.95 and np.mean(conf >= t + 0.011) < 0.95
    assert choose_threshold(np.array([0.0, 0.9, 0.9, 0.9]), 0.75) == 0.9


@pytest.fixture
def auto_run(tmp_path, monkeypatch):
    """A run folder with a region-of-interest classifier and a finder whose map is 'bright pixels' (monkeypatched:
    the plumbing is under test here; test_training trains a real one)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    _checkpoint(run / "checkpoints" / "best.pt", {"data": {"roi_margin": 0.5, "image_size": 96}},
                thresholds={"default": 0.5})
    save_segmenter(run / "checkpoints" / FILE, build_segmenter(pretrained=False), image_size=64, threshold=0.6,
                   min_area=5e-4, validation={})
    level = {"p": 0.9}
    monkeypatch.setattr(LesionFinder, "maps", lambda self, g: (g >= 250).astype(np.float32) * level["p"])
    return run, level


def test_an_image_alone_gets_an_answer_with_the_found_box(auto_run, tmp_path, capsys):
    run, level = auto_run
    path, _ = _blob_image(tmp_path)
    assert main(["predict", str(run), str(path), "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    box = tuple(map(int, row["box"].split(",")))
    assert row["box_source"] == "found" and 0.75 < row["finder_confidence"] <= 0.9  # edges blurred by the resize
    assert np.abs(np.array(box) - (250, 100, 290, 140)).max() <= 7  # found on a 64 px map, laid back on 400 x 300
    side, diagonal = box[2] - box[0], np.hypot(box[2] - box[0], box[3] - box[1])
    assert side < row["long_diameter_px"] <= diagonal + 0.5 and row["short_diameter_px"] <= row["long_diameter_px"]
    assert main(["predict", str(run), str(path), "--box", row["box"], "--format", "json"]) == 0
    given = json.loads(capsys.readouterr().out)["predictions"][0]
    assert given["box_source"] == "given" and given["p_malignant"] == row["p_malignant"]
    # two lesions: each found and classified, most confident first
    img = np.array(Image.open(path))
    img[200:260, 100:180] = 255
    Image.fromarray(img).save(tmp_path / "two.png")
    assert main(["predict", str(run), str(tmp_path / "two.png"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert [r["lesion"] for r in rows] == [1, 2] and {r["box_source"] for r in rows} == {"found"}
    # below the threshold chosen on validation: "no lesion found", never a silent guess
    level["p"] = 0.3
    assert main(["predict", str(run), str(path), "--format", "json"]) == 1
    err = capsys.readouterr().err
    assert "blob.png: no lesion found (finder confidence 0.2" in err and "< its threshold 0.60" in err and "draw a box" in err
    # a mask beside the image outranks the finder
    level["p"] = 0.9
    mask = np.zeros((300, 400), np.uint8)
    mask[10:50, 300:340] = 255
    Image.fromarray(mask).save(tmp_path / "blob_mask.png")
    assert main(["predict", str(run), str(path), "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert row["box_source"] == "mask" and row["box"] == "300,10,340,50"


def test_evaluate_with_found_boxes_reports_how_the_finder_agrees(auto_run, tmp_path, capsys):
    run, _ = auto_run
    path, img = _blob_image(tmp_path)
    mask = np.zeros((300, 400), np.uint8)
    mask[100:140, 250:290] = 255
    for cls in ("benign", "malignant"):
        (tmp_path / "cases" / cls).mkdir(parents=True)
        shutil.copy(path, tmp_path / "cases" / cls / "blob.png")
        Image.fromarray(mask).save(tmp_path / "cases" / cls / "blob_mask.png")
    assert main(["evaluate", str(run), "--folder", str(tmp_path / "cases"), "--found-boxes", "--out",
                 str(tmp_path / "ev"), "--bootstrap", "20", "--cache", str(tmp_path / "cache")]) == 0
    res = json.loads((tmp_path / "ev" / "cases_metrics.json").read_text())["lesion_finder"]
    assert res["lesion_images"] == 2 and res["found"] == 1.0 and res["box_iou_0.5"] == 1.0 and res["dice"] > 0.8
    assert "automatic mode: boxes from" in capsys.readouterr().out
    # images with neither a box nor a mask: the run's finder gives theirs without being asked
    for cls in ("benign", "malignant"):
        (tmp_path / "cases" / cls / "blob_mask.png").unlink()
    assert main(["evaluate", str(run), "--folder", str(tmp_path / "cases"), "--out", str(tmp_path / "ev2"),
                 "--bootstrap", "20", "--cache", str(tmp_path / "cache")]) == 0
    assert "2 images had no box and no mask: the lesion finder found one in 2" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev2" / "cases_metrics.json").read_text())["n"] == 2


def test_a_whole_image_model_refuses_a_finder_and_a_run_without_one_asks_for_a_box(untrained_checkpoint, tmp_path,
                                                                                 capsys):
    path, _ = _blob_image(tmp_path)
    seg = tmp_path / FILE
    save_segmenter(seg, build_segmenter(pretrained=False), image_size=64, threshold=0.5, min_area=5e-4, validation={})
    assert main(["predict", str(untrained_checkpoint), str(path), "--finder", str(seg)]) == 2
    assert "classifies whole images" in capsys.readouterr().err
    (tmp_path / "alone").mkdir()  # (a segmenter.pt beside the checkpoint would be found)
    roi = _checkpoint(tmp_path / "alone" / "roi.pt", {"data": {"roi_margin": 0.5, "image_size": 96}}, thresholds={"default": 0.5})
    assert main(["predict", str(roi), str(path)]) == 1
    assert "blob.png: this region-of-interest model ships no lesion finder" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["predict", str(roi), str(path), "--finder", str(tmp_path / "junk.pt")]) == 2
    assert "not a segmenter checkpoint" in capsys.readouterr().err


def test_clips_run_the_automatic_mode_and_a_dicoms_pixel_spacing_gives_millimetres(auto_run, tmp_path, capsys):
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    from tests.data.test_decode import make_dicom, make_video

    run, _ = auto_run
    _, img = _blob_image(tmp_path)
    clip = make_video(tmp_path / "clip.mp4", [img] * 4)
    assert main(["predict", str(run), str(clip), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictions"][0]["box_source"] == "found" and out["predictions"][0]["frames"] == 4
    assert [f["box_source"] for f in out["frames"][str(clip)]] == ["found"] * 4
    # frames in which no lesion is found are left out of the clip's answer, and said; a clip with none is refused
    bare = img.copy()
    bare[100:140, 250:290] = 0  # the grey bar without the bright square: a picture, but nothing the finder finds
    mixed = make_video(tmp_path / "mixed.mp4", [img, bare, img, bare, img])
    assert main(["predict", str(run), str(mixed), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictions"][0]["frames"] == 3 and [f["frame"] for f in out["frames"][str(mixed)]] == [0, 2, 4]
    assert out["errors"] == [{"file": str(mixed), "problem": "no lesion found in 2 of its 5 frames: its answer comes "
                                                             "from the other 3"}]
    empty = make_video(tmp_path / "empty.mp4", [bare] * 3)
    assert main(["predict", str(run), str(empty), "--format", "json"]) == 1
    assert "no lesion found in any of its 3 frames" in json.loads(capsys.readouterr().out)["errors"][0]["problem"]
    cine = make_dicom(tmp_path / "cine.dcm", np.stack([img[..., 0], bare[..., 0], img[..., 0]]))  # a multi-frame DICOM
    assert main(["predict", str(run), str(cine), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictions"][0]["frames"] == 2 and "no lesion found in 1 of its 3 frames" in out["errors"][0]["problem"]
    # what `rcdnet adapt` reads (the model's inputs): the same clip gives its 2 frames with a lesion, and says so
    from rcdnet.predict.pytorch import TorchPredictor
    from rcdnet.predict.sources import model_inputs
    from rcdnet.segment.finder import finder_for

    predictor = TorchPredictor(run / "checkpoints" / "best.pt")
    images, names, problems = model_inputs(predictor, [cine], finder_for(predictor, str(run), None))
    assert images.shape[0] == 2 and names == [str(cine)] * 2
    assert [(p.path, p.problem) for p in problems] == [(str(cine), "no lesion found in 1 of its 3 frames: its answer "
                                                                   "comes from the other 2")]
    # DICOM: an ultrasound region in centimetres (0.01 cm = 0.1 mm a pixel) outranks PixelSpacing (0.5 mm)
    dcm = make_dicom(tmp_path / "us.dcm", img[..., 0].copy())
    ds = dcmread(dcm)
    ds.PixelSpacing = [0.5, 0.5]
    region = Dataset()
    region.PhysicalUnitsXDirection, region.PhysicalDeltaX = 3, 0.01
    ds.SequenceOfUltrasoundRegions = [region]
    ds.save_as(dcm)
    assert main(["predict", str(run), str(dcm), "--format", "json"]) == 0
    mm = json.loads(capsys.readouterr().out)["predictions"][0]
    assert mm["long_diameter_mm"] == pytest.approx(0.1 * np.hypot(40, 40), rel=0.2)  # the 40 x 40 px square
    del ds.SequenceOfUltrasoundRegions
    ds.save_as(dcm)
    assert main(["predict", str(run), str(dcm), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["long_diameter_mm"] == pytest.approx(
        5 * mm["long_diameter_mm"], rel=0.01)


def test_a_checkpoints_finder_runs_on_onnx_runtime_with_pytorchs_numbers(tmp_path, monkeypatch):
    """On the onnxruntime engine (the default outside the tests) a run's segmenter.pt is exported once into the cache
    and checked; its maps equal PyTorch's, and a graph that does not is refused in favour of PyTorch."""
    monkeypatch.setenv("RCDNET_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = tmp_path / FILE
    save_segmenter(path, build_segmenter(pretrained=False), image_size=64, threshold=0.6, min_area=5e-4, validation={})
    fast, exact = LesionFinder.load(path, engine="onnxruntime"), LesionFinder.load(path, engine="pytorch")
    assert fast.runtime.startswith("onnxruntime") and exact.runtime == "pytorch"
    greys = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    assert np.abs(fast.maps(greys) - exact.maps(greys)).max() < 1e-4
    # predict's worker threads call it side by side (no lock on ONNX Runtime): each gets its own image's map
    from concurrent.futures import ThreadPoolExecutor

    many = np.random.default_rng(1).integers(0, 256, (16, 1, 64, 64), dtype=np.uint8)
    with ThreadPoolExecutor(4) as pool:
        side_by_side = list(pool.map(fast.maps, many))
    assert all(np.array_equal(a, fast.maps(g)) for a, g in zip(side_by_side, many))
    exported = list((tmp_path / "cache" / "onnx").iterdir())
    assert len(exported) == 1 and LesionFinder.load(path, engine="onnxruntime").runtime.startswith("onnxruntime")
    assert list((tmp_path / "cache" / "onnx").iterdir()) == exported  # the second load reuses the graph
    other = tmp_path / "other.pt"  # a planted graph that computes something else is refused
    save_segmenter(other, build_segmenter(pretrained=False), image_size=64, threshold=0.6, min_area=5e-4,
                   validation={})
    from rcdnet.models.exported import graph_file

    shutil.copy(exported[0], graph_file(LesionFinder.load(other, engine="pytorch").graph, "segmenter|64",
                                        tmp_path / "cache"))
    with pytest.warns(UserWarning, match="differs from PyTorch"):
        assert LesionFinder.load(other, engine="onnxruntime").runtime == "pytorch"

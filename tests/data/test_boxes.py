"""Lesion boxes and the region-of-interest mode: parsing, checks that name the file, the crop, the mapping back."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rcdnet.cli import main
from rcdnet.config import load_config
from rcdnet.data.boxes import (
    BoxError,
    box_of_mask,
    check_box,
    jitter_box,
    parse_box,
    square_around,
)
from rcdnet.data.preprocess import Preprocessor, preprocess_samples
from rcdnet.data.user_csv import read_csv

PLAIN = {"denoise_h": 0.0, "clahe_clip": 0.0}  # so that pixel values can be checked exactly


def _blob_image(tmp_path, name="blob.png"):
    """400 x 300 black image with a white 40 x 40 square at x 250..289, y 100..139 and a grey bar at x 20..59."""
    img = np.zeros((300, 400, 3), np.uint8)
    img[100:140, 250:290] = 255
    img[:, 20:60] = 120
    path = tmp_path / name
    Image.fromarray(img).save(path)
    return path, img


def _checkpoint(path, settings: dict, seed: int = 0, **extra):
    """A real, untrained checkpoint of the model ``settings`` describe (on top of the defaults), at ``path``."""
    from rcdnet.models.registry import build_model
    from rcdnet.models.checkpoint import CHECKPOINT_FORMAT

    torch.manual_seed(seed)
    cfg = load_config(None, settings)
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "classes": ["benign", "malignant"],
                "model": build_model(cfg, 2, pretrained=False).state_dict(), "val_keys": [], **extra}, path)
    return path


def test_parse_and_check_boxes_name_the_file():
    assert parse_box("10,20,30,40") == (10, 20, 30, 40)
    for bad in ("10,20,30", "a,b,c,d", "1.5,2,3,4", ""):
        with pytest.raises(BoxError, match="four whole pixel coordinates"):
            parse_box(bad, "scan.png")
    with pytest.raises(BoxError, match=r"scan.png: box \(50, 10, 20, 40\) has x1 < x0"):
        check_box((50, 10, 20, 40), (100, 100), "scan.png")
    with pytest.raises(BoxError, match="scan.png: .* zero size"):
        check_box((10, 10, 10, 40), (100, 100), "scan.png")
    with pytest.raises(BoxError, match="scan.png: .* reaches outside the 100x80 image"):
        check_box((10, 10, 120, 40), (80, 100), "scan.png")


def test_the_roi_mode_classifies_the_square_around_the_box(tmp_path):
    path, img = _blob_image(tmp_path)
    pre = Preprocessor(size=60, roi_margin=0.5, **PLAIN)
    out = pre(img, (250, 100, 290, 140))
    # the square: side 40 x 1.5 = 60 around the blob's centre (270, 120) -> x 240..299, y 90..149, at 1 px per px
    assert square_around((250, 100, 290, 140), 0.5) == (240, 90, 300, 150)
    assert (out[10:50, 10:50] == 255).all() and out[:10].max() == 0 and out[50:].max() == 0
    # the grey bar far from the box is not in the crop; the whole-image model sees it
    whole = Preprocessor(size=60, **PLAIN)(img)
    assert (whole == 120).any() and not (out == 120).any()
    # a CSV's box columns give the same crop through the cached preprocessing
    (tmp_path / "cases.csv").write_text("path,label,x0,y0,x1,y1\nblob.png,malignant,250,100,290,140\n"
                                        "blob.png,benign,0,0,0,5\nblob.png,benign,1,2,,\n")
    samples, problems = read_csv(tmp_path / "cases.csv")
    assert [s.box for s in samples] == [(250, 100, 290, 140), (0, 0, 0, 5)]  # read; checked against the image later
    assert len(problems) == 1 and "cases.csv:line 4" in problems[0].problem and "four whole" in problems[0].problem
    kept, images, bad = preprocess_samples(samples, pre, tmp_path / "cache")
    assert np.array_equal(images[0], out)
    assert len(kept) == 1 and "zero size" in bad[0].problem and bad[0].path.endswith("blob.png")


def test_a_box_reaching_past_the_edge_is_padded_black(tmp_path):
    _, img = _blob_image(tmp_path)
    out = Preprocessor(size=40, roi_margin=1.0, **PLAIN)(img, (380, 280, 400, 300))  # the corner: half outside
    assert out.shape == (40, 40) and out[30:, 30:].max() == 0 and out[:20, :20].max() == 0


def test_heat_maps_map_back_onto_the_original(tmp_path):
    heat = np.ones((60, 60), np.float32)
    roi = Preprocessor(size=60, roi_margin=0.5, **PLAIN)
    back = roi.to_original(heat, (300, 400), (250, 100, 290, 140))
    assert back.shape == (300, 400)
    assert back[90:150, 240:300].min() == 1 and back.sum() == 60 * 60
    for letterbox in (False, True):  # whole-image models: squash and letterbox both cover the original exactly
        pre = Preprocessor(size=60, letterbox=letterbox, **PLAIN)
        ramp = np.tile(np.linspace(0, 1, 60, dtype=np.float32), (60, 1))
        back = pre.to_original(ramp, (300, 400))
        assert back.shape == (300, 400) and back[:, 0].max() < 0.05 and back[:, -1].min() > 0.95


def test_boxes_from_masks_and_jitter():
    mask = np.zeros((50, 80), bool)
    mask[10:20, 30:45] = True
    mask[30:32, 60:62] = True  # a second lesion: the box holds both
    assert box_of_mask(mask) == (30, 10, 62, 32)
    assert box_of_mask(np.zeros((5, 5), bool)) is None
    rng = np.random.default_rng(0)
    boxes = [jitter_box((30, 10, 62, 32), (50, 80), rng, 0.15) for _ in range(200)]
    for b in boxes:
        check_box(b, (50, 80), "jittered")
    centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes])
    assert np.abs(centres - (46, 21)).max() <= 0.15 * 32 + 1 and centres.std(axis=0).min() > 0.5


@pytest.fixture(scope="module")
def roi_checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("roi") / "roi.pt", {"data": {"roi_margin": 0.5, "image_size": 96}},
                       thresholds={"default": 0.5})


def test_predict_box_on_the_command_line(roi_checkpoint, untrained_checkpoint, tmp_path, capsys):
    path, _ = _blob_image(tmp_path)
    assert main(["predict", str(roi_checkpoint), str(path), "--box", "250,100,290,140", "--format", "json"]) == 0
    first = json.loads(capsys.readouterr().out)["predictions"][0]["p_malignant"]
    # another box gives another crop, so another answer; the same box the same one
    assert main(["predict", str(roi_checkpoint), str(path), "--box", "10,10,80,80", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["p_malignant"] != first
    # a box outside the image, and no box at all, are problems that name the file; the command goes on
    # (exit 1: nothing could be predicted)
    assert main(["predict", str(roi_checkpoint), str(path), "--box", "350,250,450,320", "--format", "json"]) == 1
    captured = capsys.readouterr()
    assert "blob.png: box (350, 250, 450, 320) reaches outside the 400x300 image" in captured.err
    assert main(["predict", str(roi_checkpoint), str(path), "--format", "json"]) == 1
    assert "blob.png: this region-of-interest model ships no lesion finder: give the lesion's box" in capsys.readouterr().err
    # a mask beside the image gives the box when none is given
    mask = np.zeros((300, 400), np.uint8)
    mask[100:140, 250:290] = 255
    Image.fromarray(mask).save(tmp_path / "blob_mask.png")
    assert main(["predict", str(roi_checkpoint), str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["p_malignant"] == first
    # a whole-image model refuses a box; a malformed box is a usage error
    assert main(["predict", str(untrained_checkpoint), str(path), "--box", "1,2,3,4"]) == 2
    assert "classifies whole images" in capsys.readouterr().err
    assert main(["predict", str(roi_checkpoint), str(path), "--box", "1,2,3"]) == 2


def test_the_localisation_head_trains_with_and_without_masks_and_maps_back(tmp_path):
    from rcdnet.predict.pytorch import TorchPredictor
    from rcdnet.training.localise import mask_loss

    # the loss counts exactly the items whose mask counts, and is zero (with gradients) when none does
    logits = torch.randn(4, 1, 7, 7, requires_grad=True)
    masks = (torch.rand(4, 1, 224, 224) > 0.7).float()
    counts = torch.tensor([True, False, True, False])
    both = mask_loss(logits, masks, counts)
    assert both.item() == pytest.approx(mask_loss(logits[counts], masks[counts], counts[counts]).item(), rel=1e-6)
    both.backward()
    assert logits.grad[~counts].abs().max() == 0 and logits.grad[counts].abs().max() > 0
    none = mask_loss(logits, masks, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad
    # a checkpoint with the head: its lesion map has the input's size and maps back onto the original
    path = _checkpoint(tmp_path / "loc.pt", {"train": {"localise_weight": 0.5},
                                             "data": {"image_size": 96, "letterbox": True, "roi_margin": 0}})
    predictor = TorchPredictor(path)
    _, img = _blob_image(tmp_path)
    maps = predictor.localise(predictor.preprocessor(img)[None])
    assert maps.shape == (1, 96, 96) and 0 <= maps.min() and maps.max() <= 1
    back = predictor.preprocessor.to_original(maps[0], img.shape[:2])
    assert back.shape == (300, 400)


def test_roi_export_with_its_lesion_map_matches_pytorch(tmp_path):
    """One export covers both: a region-of-interest model (its crop travels as preprocessing metadata) with a
    localisation head (a second output, lesion_map)."""
    from rcdnet.deploy.onnx import export_onnx
    from rcdnet.predict.onnx import OnnxPredictor
    from rcdnet.predict.pytorch import TorchPredictor

    path = _checkpoint(tmp_path / "roi_loc.pt", {"train": {"localise_weight": 0.5},
                                                 "data": {"image_size": 96, "roi_margin": 0.5}}, seed=2)
    torch_p = TorchPredictor(path)
    onnx_p = OnnxPredictor(export_onnx(torch_p, tmp_path / "roi_loc.onnx"))
    assert onnx_p.preprocessor == torch_p.preprocessor and onnx_p.preprocessor.roi_margin == 0.5
    _, img = _blob_image(tmp_path)
    x = np.stack([torch_p.preprocessor(img, b) for b in ((250, 100, 290, 140), (10, 10, 80, 80))])
    assert np.abs(onnx_p.predict_arrays(x) - torch_p.predict_arrays(x)).max() < 1e-4
    assert onnx_p.has_localiser and np.abs(onnx_p.localise(x) - torch_p.localise(x)).max() < 1e-4


def test_explain_outlines_the_lesion_the_model_found(tmp_path, capsys):

    loc = _checkpoint(tmp_path / "loc.pt", {"train": {"localise_weight": 0.5}, "data": {"image_size": 96, "roi_margin": 0}},
                      seed=1)
    path, img = _blob_image(tmp_path)
    mask = np.zeros((300, 400), np.uint8)
    mask[100:140, 250:290] = 255
    Image.fromarray(mask).save(tmp_path / "blob_mask.png")
    assert main(["explain", str(loc), str(path), "--out", str(tmp_path / "ex"), "--quiet"]) == 0
    rows = (tmp_path / "ex" / "explain.csv").read_text().splitlines()
    assert "found_dice" in rows[0]
    dice = float(rows[1].split(",")[rows[0].split(",").index("found_dice")])
    from rcdnet.predict import load_predictor

    model = load_predictor(loc)  # the Dice of the outlined region against the mask, computed again by hand
    found = model.preprocessor.to_original(model.localise(model.preprocessor(img)[None])[0], img.shape[:2]) >= 0.5
    assert dice == pytest.approx(2 * (found & (mask > 0)).sum() / max(found.sum() + (mask > 0).sum(), 1), abs=1e-3)

"""Heat maps: agreement metrics on constructed cases, mapping back to the original, hooks released, the ViT
path, and ``rcdnet explain`` on real images (pictures, table, figure, bad input)."""

import json

import cv2
import numpy as np
import pytest
import torch

from rcdnet.cli import main
from rcdnet.data.decode import read_image
from rcdnet.data.preprocess import Preprocessor
from rcdnet.explain.agreement import (
    centre_prior,
    energy_in_mask,
    pointing_game,
    top_k_iou,
)
from rcdnet.explain.cam import HeatMapper, default_layer
from rcdnet.explain.render import CAPTION_PX
from rcdnet.models.input import Normalise, to_grey, to_unit
from rcdnet.models.registry import create_model
from tests.conftest import BUSI


def _disc(shape=(100, 120), centre=(40, 50), r=15) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def test_energy_in_mask_is_one_for_the_mask_and_zero_for_its_complement():
    mask = _disc()
    assert energy_in_mask(mask.astype(float), mask) == pytest.approx(1.0)
    assert energy_in_mask((~mask).astype(float), mask) == pytest.approx(0.0)
    uniform = np.ones(mask.shape)
    assert energy_in_mask(uniform, mask) == pytest.approx(mask.mean())  # a flat map scores the mask's area
    with pytest.raises(ValueError, match="differ in size"):
        energy_in_mask(np.ones((10, 10)), mask)
    with pytest.raises(ValueError, match="empty"):
        energy_in_mask(uniform, np.zeros(mask.shape, bool))


def test_pointing_game_on_constructed_cases():
    mask = _disc(centre=(40, 50), r=15)
    heat = np.zeros(mask.shape)
    heat[40, 50] = 1  # maximum at the lesion centre
    assert pointing_game(heat, mask)
    heat[:] = 0
    heat[40, 50 + 15 + 10] = 1  # 10 px outside the edge: within the 15 px tolerance, not within 5
    assert pointing_game(heat, mask, tolerance=15)
    assert not pointing_game(heat, mask, tolerance=5)
    heat[:] = 0
    heat[95, 5] = 1  # far corner
    assert not pointing_game(heat, mask)


def test_top_k_iou():
    mask = _disc()
    k = 100 * mask.mean()
    assert top_k_iou(mask.astype(float) + 0.01 * _disc(r=5), mask, k) == pytest.approx(1.0)
    assert top_k_iou((~mask).astype(float), mask, k) == pytest.approx(0.0)


def test_centre_prior_peaks_in_the_middle():
    c = centre_prior((90, 120))
    assert np.unravel_index(np.argmax(c), c.shape) in {(44, 59), (44, 60), (45, 59), (45, 60)}


def test_to_original_undoes_squash_and_letterbox():
    heat = np.zeros((224, 224), np.float32)
    heat[:112] = 1  # top half hot
    out = Preprocessor(size=224).to_original(heat, (300, 500))
    assert out.shape == (300, 500) and out[:140].min() > 0.99 and out[160:].max() < 0.01
    # letterboxed 300x600: content rows 56..168 of the 224 square; padding must be cropped away
    lb = Preprocessor(size=224, letterbox=True)
    heat = np.zeros((224, 224), np.float32)
    heat[56:168, :112] = 1  # left half of the content
    out = lb.to_original(heat, (300, 600))
    assert out.shape == (300, 600)
    assert out[:, :280].min() > 0.99 and out[:, 320:].max() < 0.01


@pytest.fixture(scope="module")
def rcdnet_model():
    torch.manual_seed(0)
    return create_model("rcdnet", pretrained=True).eval()


def _normalise(images: np.ndarray) -> torch.Tensor:
    """The model input of an EfficientNet-Lite model (mean = std = 0.5), through the one shared definition."""
    return Normalise((0.5,) * 3, (0.5,) * 3)(to_unit(to_grey(images)))


def _real_images(n=2) -> np.ndarray:
    pre = Preprocessor()
    from rcdnet.data.decode import read_image

    return np.stack([pre(read_image(BUSI / "malignant" / f"malignant ({i}).png")) for i in range(1, n + 1)])


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam", "layercam"])
def test_heat_maps_on_real_images_and_hooks_released(rcdnet_model, method, data_root):
    images = _real_images()
    with HeatMapper(rcdnet_model, ["benign", "malignant"], _normalise, method) as hm:
        assert hm.layer == "cbam"
        assert len(rcdnet_model.cbam._forward_hooks) > 0
        maps = hm(images)
    assert maps.shape == (2, 224, 224) and maps.dtype == np.float32
    assert 0 <= maps.min() and maps.max() <= 1 + 1e-6 and maps.std() > 0
    assert len(rcdnet_model.cbam._forward_hooks) == 0  # released on leaving the block


def test_centre_prior_is_a_method_of_its_own(rcdnet_model, data_root):
    pre = Preprocessor(size=224)
    images = np.stack([pre(read_image(BUSI / "benign" / f"benign ({i}).png")) for i in (1, 2)])
    with HeatMapper(rcdnet_model, ["benign", "malignant"], _normalise, "centre-prior") as hm:
        maps = hm(images)
        assert hm.layer == "-"  # it ignores the model
    assert maps.shape == (2, 224, 224) and np.array_equal(maps[0], maps[1])
    assert np.allclose(maps[0], centre_prior((224, 224)).astype(np.float32))
    assert not any(m._forward_hooks for m in rcdnet_model.modules())


def test_bad_method_layer_or_target(rcdnet_model):
    with pytest.raises(ValueError, match="unknown heat-map method 'gradkam'"):
        HeatMapper(rcdnet_model, ["benign", "malignant"], _normalise, "gradkam")
    with pytest.raises(ValueError, match="no layer 'backbone.nope'"):
        HeatMapper(rcdnet_model, ["benign", "malignant"], _normalise, layer="backbone.nope")
    with pytest.raises(ValueError, match="unknown target 'normal'"):
        HeatMapper(rcdnet_model, ["benign", "malignant"], _normalise, target="normal")


@pytest.mark.parametrize("name,layer", [("vit", "blocks.11.norm1"), ("resnet50", "layer4"),
                                        ("mobilenetv2", "bn2"), ("regnet", "s4")])
def test_default_layers_of_the_baselines(name, layer):
    model = create_model(name, pretrained=False).eval()
    assert default_layer(model) == layer


def test_vit_path_gives_a_spatial_map(data_root):
    torch.manual_seed(0)
    model = create_model("vit", pretrained=False).eval()
    with HeatMapper(model, ["benign", "malignant"], _normalise) as hm:
        maps = hm(_real_images(1))
    assert maps.shape == (1, 224, 224) and maps.std() > 0


@pytest.mark.slow
def test_explain_command_pictures_table_figure_and_bad_input(untrained_checkpoint, data_root, cache_dir, tmp_path,
                                                             capsys):
    src = BUSI / "malignant" / "malignant (2).png"
    img = tmp_path / "in" / "case.png"
    img.parent.mkdir()
    img.write_bytes(src.read_bytes())
    (tmp_path / "in" / "case_mask.png").write_bytes((BUSI / "malignant" / "malignant (2)_mask.png").read_bytes())
    h, w = cv2.imread(str(src)).shape[:2]
    (tmp_path / "in" / "odd.png").write_bytes(src.read_bytes())
    cv2.imwrite(str(tmp_path / "in" / "odd_mask.png"), np.zeros((h + 3, w), np.uint8))  # mask of another size
    (tmp_path / "in" / "notes.png").write_text("not an image")
    (tmp_path / "in" / "plain.png").write_bytes((BUSI / "benign" / "benign (2).png").read_bytes())  # no mask
    out = tmp_path / "out"
    code = main(["explain", str(untrained_checkpoint), str(tmp_path / "in"), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    pic = cv2.imread(str(out / "case.png"))
    assert pic.shape[:2] == (h + CAPTION_PX, 2 * w)  # original | overlay, caption band below
    assert "notes.png: not an image, DICOM or video file" in err
    assert "odd_mask.png: mask is" in err
    rows = (out / "explain.csv").read_text().splitlines()
    assert len(rows) == 3 and "energy_in_mask" in rows[0]  # header + the two readable images
    assert [r.split(",")[-3:] == ["", "", ""] for r in rows[1:]] == [False, True]  # agreement only with a mask

    # the table at 128 px: the same model and mechanics, and ROAD's imputation (a sparse solve per image) 6x cheaper
    small = torch.load(untrained_checkpoint, weights_only=True)
    small["config"]["data"]["image_size"] = 128
    torch.save(small, tmp_path / "small.pt")
    code = main(["explain", str(tmp_path / "small.pt"), "--evaluate", "--methods", "gradcam", "eigencam",
                 "--limit", "3", "--road-images", "2", "--figure", "--data", str(data_root), "--out", str(out),
                 "--cache", str(cache_dir), "--quiet"])
    assert code == 0
    table = json.loads((out / "explain_metrics.json").read_text())
    assert {(r["dataset"], r["method"]) for r in table} == {
        (d, m) for d in ("val", "udiat") for m in ("gradcam", "eigencam", "centre-prior")}
    for r in table:  # stratified subsets (at least 2 per class)
        assert 3 <= r["n"] <= 4 and 2 <= r["n_road"] <= r["n"]
        assert 0 <= r["energy_in_mask"] <= 1 and r["energy_ci"][0] <= r["energy_in_mask"] <= r["energy_ci"][1]
    assert (out / "explain_metrics.md").read_text().count("\n") >= 8
    assert cv2.imread(str(out / "figure4.png")) is not None
    chosen = json.loads((out / "figure4.json").read_text())
    for d in ("val", "udiat"):  # every case is right or wrong at the default point: each class has a picture
        for c in ("benign", "malignant"):
            assert f"{d}: {c}, correct" in chosen or f"{d}: {c}, wrong" in chosen, (d, c, chosen)
    assert set(chosen) <= {
        f"{d}: {c}" for d in ("val", "udiat") for c in ("benign, correct", "benign, wrong", "malignant, correct",
                                                             "malignant, wrong")}


def test_explain_command_rejects_unknown_method(untrained_checkpoint, tmp_path, capsys):
    assert main(["explain", str(untrained_checkpoint), "x.png", "--method", "magic", "--out", str(tmp_path)]) == 2
    assert "unknown heat-map method 'magic'" in capsys.readouterr().err

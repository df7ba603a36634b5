import numpy as np
import pytest
import timm
import torch
from PIL import Image

from rcdnet.models.pretrained import (
    WeightsUnavailable,
    convert_lite_state_dict,
    create_backbone,
    lite_weight_file,
)
from rcdnet.models.registry import create_model


def test_conversion_maps_every_tensor_in_order():
    src = torch.load(lite_weight_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    out = convert_lite_state_dict(src, model)
    assert list(out) == list(model.state_dict())
    assert torch.equal(out["conv_stem.weight"], src["_conv_stem.weight"])
    assert torch.equal(out["classifier.bias"], src["_fc.bias"])


def test_conversion_rejects_a_mismatched_model():
    src = torch.load(lite_weight_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    with pytest.raises(ValueError):
        convert_lite_state_dict(src, timm.create_model("tf_efficientnet_lite1", pretrained=False))


def test_converted_weights_recognise_a_cat():
    """scikit-image's chelsea photo must come out as a cat (ImageNet classes 281-285) with high confidence."""
    data = pytest.importorskip("skimage.data")
    model = create_backbone("tf_efficientnet_lite0", pretrained=True).eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    x = timm.data.create_transform(**cfg)(Image.fromarray(data.chelsea())).unsqueeze(0)
    with torch.no_grad():
        p = model(x).softmax(-1)[0]
    top = int(p.argmax())
    assert 281 <= top <= 285, top
    assert float(p[281:286].sum()) > 0.8


def test_hub_model_without_network_gives_a_clear_error(offline_hub):
    with pytest.raises(WeightsUnavailable, match="from scratch"):
        create_backbone("resnet18", pretrained=True)


def test_local_weight_file_for_another_backbone(tmp_path):
    ref = timm.create_model("resnet18", pretrained=False)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    model = create_backbone("resnet18", pretrained=True, weights=tmp_path / "r18.pth", num_classes=2)
    assert torch.equal(model.conv1.weight, ref.conv1.weight)
    assert model.fc.out_features == 2
    np.testing.assert_equal(model.fc.weight.shape, (2, 512))


def test_plain_lite_baseline_gets_imagenet_features_and_a_fresh_head():
    """The ablation's plain backbone: ImageNet features, a 2-class classifier (not the 1000-class one)."""
    torch.manual_seed(0)
    plain = create_model("efficientnet_lite0", num_classes=2, pretrained=True)
    rcd = create_model("rcdnet", num_classes=2, pretrained=True)
    assert plain.classifier.out_features == 2
    assert torch.equal(plain.conv_stem.weight, rcd.backbone.conv_stem.weight)
    assert torch.equal(plain.blocks[3][0].conv_pw.weight, rcd.backbone.blocks[3][0].conv_pw.weight)


def test_vit_takes_the_configured_image_size():
    model = create_model("timm:vit_tiny_patch16_224", pretrained=False, image_size=64).eval()
    assert model.patch_embed.grid_size == (4, 4)
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)

import pytest
import torch
from torch import nn

from rcdnet.models.blocks import (
    CBAM,
    ChannelAttention,
    DepthwiseSeparableConv,
    SpatialAttention,
)
from rcdnet.models.rcdnet import RcdNet
from rcdnet.models.registry import create_model


def test_dsc_shape_and_parameter_saving():
    dsc = DepthwiseSeparableConv(256, 128)
    x = torch.randn(2, 256, 14, 14)
    assert dsc(x).shape == (2, 128, 14, 14)
    standard = nn.Conv2d(256, 128, 3, padding=1, bias=False)
    conv_params = lambda m: sum(p.numel() for n, p in m.named_parameters() if "bn" not in n)
    # 256*9 + 256*128 = 35,072 against 256*128*9 = 294,912: about 8.4x fewer
    assert conv_params(dsc) == 256 * 9 + 256 * 128
    assert conv_params(standard) / conv_params(dsc) > 8


def test_cbam_shapes_and_weights_in_unit_interval():
    x = torch.randn(3, 64, 7, 7)
    ca, sa = ChannelAttention(64), SpatialAttention()
    wc, ws = ca(x), sa(x)
    assert wc.shape == (3, 64, 1, 1) and ws.shape == (3, 1, 7, 7)
    assert 0 < wc.min() and wc.max() < 1 and 0 < ws.min() and ws.max() < 1
    assert CBAM(64)(x).shape == x.shape


def test_cbam_attends_spatially():
    """Spatial attention must be able to tell locations apart: a bright patch gets a different weight."""
    torch.manual_seed(0)
    x = torch.zeros(1, 8, 7, 7)
    x[..., 3, 3] = 5.0
    w = SpatialAttention()(x)
    assert not torch.allclose(w[..., 3, 3], w[..., 0, 0])


def test_rcdnet_shapes_documented():
    model = create_model("rcdnet", pretrained=False)
    assert isinstance(model, RcdNet)
    x = torch.randn(2, 3, 224, 224)
    assert model.backbone.forward_features(x).shape == (2, 1280, 7, 7)
    assert model.forward_features(x).shape == (2, 512, 7, 7)
    assert model(x).shape == (2, 2)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'resnet5'"):
        create_model("resnet5")

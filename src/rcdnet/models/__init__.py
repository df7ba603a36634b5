"""Models: RcdNet (EfficientNet + depthwise-separable conv + CBAM) and a registry of timm baselines."""

from rcdnet.models.blocks import CBAM, ChannelAttention, DepthwiseSeparableConv, SpatialAttention
from rcdnet.models.rcdnet import RcdNet
from rcdnet.models.registry import create_model, list_models

__all__ = ["CBAM", "ChannelAttention", "DepthwiseSeparableConv", "RcdNet", "SpatialAttention", "create_model",
           "list_models"]

"""RcdNet: ImageNet-pretrained EfficientNet features -> depthwise-separable conv -> CBAM -> classifier.

Tensor shapes for EfficientNet-Lite0 at 224 x 224 input (batch B):

    image                    (B, 3, 224, 224)
    backbone.forward_features (B, 1280, 7, 7)   stem, MBConv stages, 1x1 conv head
    dsc                      (B, dsc_channels, 7, 7)   depthwise 3x3 + pointwise 1x1
    cbam                     (B, dsc_channels, 7, 7)   channel then spatial attention
    global average pool      (B, dsc_channels)
    dropout + linear         (B, num_classes)   logits
    localiser (optional)     (B, 1, 7, 7)       lesion-mask logits from the same attended map (1x1 conv): trained
                                                jointly, so the features the classifier pools learn where the lesion is
"""

from __future__ import annotations

import torch
from torch import nn

from rcdnet.models.blocks import CBAM, DepthwiseSeparableConv


class RcdNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int = 2, dsc_channels: int | None = 512,
                 use_cbam: bool = True, drop_rate: float = 0.3, localise: bool = False):
        super().__init__()
        self.backbone = backbone
        feat = backbone.num_features
        self.dsc = DepthwiseSeparableConv(feat, dsc_channels) if dsc_channels else nn.Identity()
        out = dsc_channels or feat
        self.cbam = CBAM(out) if use_cbam else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(out, num_classes)
        self.localiser = nn.Conv2d(out, 1, kernel_size=1) if localise else None
        self.num_features = out
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H/32, W/32) attended feature map (the Grad-CAM target)."""
        return self.cbam(self.dsc(self.backbone.forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (B, num_classes) logits; while training a model with a localiser, also its
        (B, 1, H/32, W/32) lesion-mask logits (one pass for both losses)."""
        f = self.forward_features(x)
        logits = self.classifier(self.dropout(self.pool(f).flatten(1)))
        if self.localiser is not None and self.training:
            return logits, self.localiser(f)
        return logits

    def localise(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1, H/32, W/32) lesion-mask logits (a model built with ``localise=True``)."""
        if self.localiser is None:
            raise ValueError("this model has no localisation head (train it with train.localise_weight > 0)")
        return self.localiser(self.forward_features(x))

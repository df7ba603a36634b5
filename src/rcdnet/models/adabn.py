"""AdaBN (Li et al., 2016): re-estimate batch-norm statistics on the target domain's images (never its labels).

Only the running mean / variance of BatchNorm layers change; every learned weight stays as trained."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are the cumulative average over ``batches``
    (each (B, 3, H, W), preprocessed like training inputs). The copy is returned in eval mode."""
    adapted = copy.deepcopy(model)
    bns = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError("the model has no batch-norm layers to adapt")
    adapted.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over all batches
        bn.train()
    seen = 0
    for x in batches:
        adapted(x)
        seen += len(x)
    if seen == 0:
        raise ValueError("AdaBN needs at least one target image")
    return adapted.eval()

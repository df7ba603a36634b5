"""A seed ensemble as one model: several trained copies of one architecture, their probabilities averaged.

``train.members: K`` trains K models on the same split with seeds seed, seed+1, ... (``rcdnet.training.members``)
and ships them inside one checkpoint as :class:`MemberMean`, so prediction, export, heat maps and site validation see
one model. Its output is the log of the members' mean softmax probability: a valid logit vector (softmax of it is
that mean), so the temperature fitted on validation and every consumer of logits work unchanged.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

_MEMBER_KEY = re.compile(r"^members\.(\d+)\.")


class MemberMean(nn.Module):
    """(N, 3, S, S) -> (N, C) ``log(mean_k softmax(member_k(x)))``."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("a member ensemble needs at least two models")
        self.members = nn.ModuleList(members)

    @property
    def pretrained_cfg(self) -> dict:
        """The first member's input statistics (every member was built the same way)."""
        return getattr(self.members[0], "pretrained_cfg", None) or {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def member_count(state_dict: dict) -> int:
    """How many members a saved model's state dict holds (1: a single model)."""
    found = {int(m.group(1)) for k in state_dict if (m := _MEMBER_KEY.match(k))}
    return max(found) + 1 if found else 1


def member_state(states: list[dict]) -> dict:
    """The state dict of :class:`MemberMean` from its members' state dicts, in order."""
    return {f"members.{i}.{k}": v for i, sd in enumerate(states) for k, v in sd.items()}

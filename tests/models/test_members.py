"""A seed ensemble as one model: the mean of its members' probabilities, loadable from its state dict alone."""

import numpy as np
import pytest
import torch

from rcdnet.config import ConfigError, load_config
from rcdnet.explain.cam import HeatMapper, default_layer
from rcdnet.models.members import MemberMean, member_count, member_state
from rcdnet.models.registry import build_model


def _members(k: int = 3) -> list[torch.nn.Module]:
    cfg = load_config(None, {"model": {"dsc_channels": 32}})
    torch.manual_seed(0)
    return [build_model(cfg, 2, pretrained=False).eval() for _ in range(k)]


def test_output_is_the_log_of_the_members_mean_probability():
    members = _members()
    for m in members:  # different heads: the members must disagree for the test to mean anything
        torch.nn.init.normal_(m.classifier.weight, std=0.5)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        probs = np.stack([torch.softmax(m(x), 1).numpy() for m in members])
        out = MemberMean(members).eval()(x)
    assert np.abs(probs[0] - probs[1]).max() > 1e-3
    np.testing.assert_allclose(torch.softmax(out, 1).numpy(), probs.mean(0), atol=1e-6)
    np.testing.assert_allclose(torch.exp(out).sum(1).numpy(), 1.0, atol=1e-6)  # log-probabilities: a valid logit


def test_state_dict_round_trip_and_member_count():
    members = _members(2)
    ens = MemberMean(members)
    sd = member_state([m.state_dict() for m in members])
    assert sd.keys() == ens.state_dict().keys()
    assert member_count(sd) == 2 and member_count(members[0].state_dict()) == 1
    cfg = load_config(None, {"model": {"dsc_channels": 32}, "train": {"members": 2}})
    again = build_model(cfg, 2, pretrained=False)
    again.load_state_dict(sd)  # strict: every key in its place
    assert isinstance(again, MemberMean) and len(again.members) == 2
    assert isinstance(build_model(cfg, 2, pretrained=False, members=1), type(members[0]))


def test_heat_maps_use_every_member():
    ens = MemberMean(_members(2)).eval()
    assert default_layer(ens) == "members.0.cbam,members.1.cbam"
    with HeatMapper(ens, ["benign", "malignant"], lambda a: torch.from_numpy(a).float().div(255).unsqueeze(1)
                    .expand(-1, 3, -1, -1).contiguous()) as cam:
        assert len(cam.cam.target_layers) == 2
        maps = cam(np.random.default_rng(0).integers(0, 255, (2, 64, 64), dtype=np.uint8))
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()


@pytest.mark.parametrize("change, message", [({"members": 0}, "at least 1"),
                                             ({"members": 2, "localise_weight": 1.0}, "localisation head")])
def test_bad_member_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"train": change})

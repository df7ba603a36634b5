"""The segmenter learns real lesions: trained briefly on a few images of each hospital, its masks match theirs."""

import pytest

from rcdnet.config import load_config
from rcdnet.data.sources import load_sources
from rcdnet.segment.data import load_masks
from rcdnet.segment.model import build_segmenter
from rcdnet.segment.train import mean_dice, predict_maps, train_segmenter

pytestmark = pytest.mark.slow
SOURCES = ("busi", "bus-uclm", "breast", "udiat")


def test_the_segmenter_outlines_each_hospitals_lesions(data_root):
    """12 images per source, 20 short epochs at 96 px (about 25 s on 2 cores): Dice on those images >= 0.6 for every
    source, where the untrained network (and any mask or augmentation misaligned with its image) stays far below."""
    cfg = load_config(None, {"segment": {"image_size": 96, "epochs": 20, "batch_size": 8, "lr": 3e-3}})
    samples, _ = load_sources(SOURCES, data_root)
    chosen = [s for src in SOURCES for s in [x for x in samples if x.source == src][:12]]
    data, problems = load_masks(chosen, 96)
    assert not problems and len(data.samples) == 48 and data.masks.max() == 255
    before = mean_dice(predict_maps(build_segmenter(pretrained=True), data.images), data.masks)
    model, history = train_segmenter(cfg.segment, 0, data, data, log=lambda m: None)
    assert len(history) == 20 and history[-1]["loss"] < history[0]["loss"]
    maps = predict_maps(model, data.images)
    for src in SOURCES:
        idx = [i for i, s in enumerate(data.samples) if s.source == src]
        assert mean_dice(maps[idx], data.masks[idx]) >= 0.6, src
    assert before < 0.3

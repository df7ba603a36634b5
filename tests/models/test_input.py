"""The model input is defined once: a training item without augmentation is exactly what every predictor feeds
the model, and the decision function is normalise -> model (mirror average) -> softmax(z / T)."""

import numpy as np
import torch

from rcdnet.data.decode import read_image
from rcdnet.models.input import DecisionFunction, Normalise, to_grey
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.training.dataset import ImageArrayDataset
from tests.conftest import BUSI


def test_training_item_equals_what_the_predictor_feeds_the_model(untrained_checkpoint, data_root):
    predictor = TorchPredictor(untrained_checkpoint)
    images = np.stack([predictor.preprocessor(read_image(BUSI / c / f"{c} (3).png")) for c in ("benign", "malignant")])
    ds = ImageArrayDataset(images, np.array([0, 1]), predictor.decision.normalise)
    fed = predictor.model_input(images)
    assert fed.shape == (2, 3, images.shape[1], images.shape[2])
    for i in range(2):
        assert torch.equal(ds[i][0], fed[i])
    # and the logits the predictor reports are the model's on exactly that input (one image per pass, as it runs)
    predictor.decision.tta = False
    with torch.inference_mode():
        direct = np.concatenate([predictor.model(fed[i:i + 1]).numpy() for i in range(len(fed))])
    assert np.array_equal(predictor.logits_arrays(images), direct)


def test_decision_function_is_normalise_model_mirror_average_and_temperature():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2)).eval()
    norm = Normalise((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    images = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16), dtype=np.uint8)
    x = (torch.from_numpy(images).float()[:, None].expand(-1, 3, -1, -1) / 255 - norm.mean) / norm.std
    fn = DecisionFunction(model, norm, temperature=2.0, tta=True)
    with torch.inference_mode():
        z = (model(x) + model(torch.flip(x, dims=[3]))) / 2
        assert torch.allclose(fn.logits(to_grey(images)), z, atol=1e-6)
        assert torch.allclose(fn(to_grey(images)), torch.softmax(z / 2.0, dim=1), atol=1e-6)
        fn.tta = False
        assert torch.allclose(fn.logits(to_grey(images)), model(x), atol=1e-6)
    assert norm.stats() == {"mean": [np.float32(v).item() for v in (0.4, 0.5, 0.6)],
                            "std": [np.float32(v).item() for v in (0.2, 0.25, 0.3)]}

import cv2
import numpy as np
import pytest

from rcdnet.data.decode import read_image, to_gray
from rcdnet.data.shifts import SHIFTS, apply_shift, random_shift
from tests.conftest import BUSI


@pytest.fixture(scope="module")
def img(data_root):
    return to_gray(read_image(BUSI / "malignant" / "malignant (12).png"))


def _hf_energy(g):
    return float(np.abs(cv2.Laplacian(g.astype(np.float32), cv2.CV_32F)).mean())


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_every_shift_is_deterministic_for_a_seed_and_changes_the_image(img, name):
    a, b = apply_shift(img, name, 2, seed=7), apply_shift(img, name, 2, seed=7)
    assert a.dtype == np.uint8 and a.ndim == 2
    assert np.array_equal(a, b)
    assert a.shape != img.shape or not np.array_equal(a, img)


def test_random_shifts_follow_their_seed(img):
    """Same seed, same image (above); another seed, another image: the seed is what makes it reproducible."""
    for name in ("speckle", "tgc"):
        assert not np.array_equal(apply_shift(img, name, 2, seed=7), apply_shift(img, name, 2, seed=8)), name


def test_shifts_do_what_their_names_say(img):
    f = img.astype(float)
    assert apply_shift(img, "gain", 2).mean() > img.mean()
    assert apply_shift(img, "gain_down", 2).mean() < img.mean()
    assert apply_shift(img, "contrast", 2).std() < img.std()
    assert apply_shift(img, "gamma", 2).mean() < img.mean()  # gamma > 1 darkens mid-tones
    assert _hf_energy(apply_shift(img, "blur", 2)) < 0.7 * _hf_energy(img)
    assert _hf_energy(apply_shift(img, "lowres", 2)) < 0.8 * _hf_energy(img)
    assert _hf_energy(apply_shift(img, "speckle", 2)) > _hf_energy(img)
    z = apply_shift(img, "zoom", 2)
    assert z.shape == (round(img.shape[0] * 0.8), round(img.shape[1] * 0.8))
    a = apply_shift(img, "aspect", 2)
    assert a.shape[0] == img.shape[0] and a.shape[1] == round(img.shape[1] * 1.3)
    t = apply_shift(img, "tgc", 3, seed=1).astype(float)
    ratio_top = t[: len(t) // 4].mean() / f[: len(f) // 4].mean()
    ratio_bottom = t[-len(t) // 4:].mean() / f[-len(f) // 4:].mean()
    assert abs(ratio_top - ratio_bottom) > 0.5  # gain changes with depth
    o = apply_shift(img, "overlay", 3, seed=2)
    assert (o == 255).sum() > (img == 255).sum() + 100


def test_stronger_levels_change_more(img):
    for name in ("blur", "speckle", "contrast", "gain_down"):
        d = [np.abs(apply_shift(img, name, lv, 0).astype(float) - img).mean() for lv in (1, 2, 3)]
        assert d[0] < d[1] < d[2], name


def test_bad_arguments_are_clear_errors(img):
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        apply_shift(img, "fog", 1)
    with pytest.raises(ValueError, match="level"):
        apply_shift(img, "blur", 4)
    with pytest.raises(ValueError, match="grayscale"):
        apply_shift(np.zeros((4, 4, 3), np.uint8), "blur", 1)


def test_random_shift_draws_from_the_generator(img):
    a = random_shift(img, np.random.default_rng(0), p=1.0)
    b = random_shift(img, np.random.default_rng(0), p=1.0)
    assert np.array_equal(a, b)
    assert random_shift(img, np.random.default_rng(0), p=0.0) is img

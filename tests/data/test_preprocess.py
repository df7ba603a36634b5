import numpy as np
import pytest

from rcdnet.data.decode import read_image
from rcdnet.data.preprocess import Preprocessor, preprocess_samples
from rcdnet.data.samples import Sample
from tests.conftest import BUSI


def test_output_is_square_uint8_and_contrast_is_enhanced(data_root):
    rgb = read_image(BUSI / "benign" / "benign (3).png")
    plain = Preprocessor(clahe_clip=0, denoise_h=0)(rgb)
    enhanced = Preprocessor()(rgb)
    assert plain.shape == enhanced.shape == (224, 224) and enhanced.dtype == np.uint8
    assert enhanced.std() > plain.std()  # CLAHE spreads the histogram


def test_letterbox_keeps_aspect_ratio(data_root):
    rgb = read_image(BUSI / "benign" / "benign (3).png")
    h, w = rgb.shape[:2]
    out = Preprocessor(letterbox=True, clahe_clip=0, denoise_h=0)(rgb)
    rows = np.nonzero(out.max(axis=1))[0]
    cols = np.nonzero(out.max(axis=0))[0]
    got = (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1)
    assert got == pytest.approx(w / h, rel=0.05)


def test_cache_returns_identical_arrays_and_bad_files_are_reported(tmp_path, data_root):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    samples = [Sample(BUSI / "benign" / "benign (3).png", "benign", "a", "t"), Sample(bad, "benign", "b", "t")]
    kept, first, problems = preprocess_samples(samples, Preprocessor(), tmp_path / "cache")
    assert [s.key for s in kept] == ["a"] and first.shape == (1, 224, 224)
    assert len(problems) == 1 and "broken.png" in problems[0].path
    _, second, _ = preprocess_samples(samples, Preprocessor(), tmp_path / "cache")
    assert np.array_equal(first, second)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1


def test_shifted_variants_depend_on_the_pixels_not_the_files_path_or_time(tmp_path, data_root):
    import os
    import shutil

    from rcdnet.data.preprocess import preprocess_variants

    src = BUSI / "benign" / "benign (5).png"
    copy = tmp_path / "elsewhere" / "renamed.png"
    copy.parent.mkdir()
    shutil.copy(src, copy)
    os.utime(copy, ns=(1_000_000_000, 1_000_000_000))  # another modification time
    pre = Preprocessor(size=64)
    a = preprocess_variants([Sample(path=src, label="benign", key="a", source="t")], pre, 3, tmp_path / "c1")
    b = preprocess_variants([Sample(path=copy, label="benign", key="b", source="t")], pre, 3, tmp_path / "c2")
    assert a.shape == (1, 3, 64, 64) and np.array_equal(a, b)
    assert not np.array_equal(a[0, 0], a[0, 1])  # the copies of one image differ from each other



def test_level_0_copies_are_only_cut_around_moved_boxes(tmp_path, data_root):
    from rcdnet.data.preprocess import preprocess_variants

    src = BUSI / "malignant" / "malignant (5).png"
    s = Sample(path=src, label="malignant", key="m5", source="t", box=(200, 150, 320, 250))
    pre = Preprocessor(size=64, roi_margin=0.5)
    tight = preprocess_samples([s], pre, tmp_path)[1][0]
    same = preprocess_variants([s], pre, 3, tmp_path, max_level=0)  # no jitter, no shift: the image itself, 3 times
    assert all(np.array_equal(c, tight) for c in same[0])
    moved = preprocess_variants([s], pre, 3, tmp_path, max_level=0, box_jitter=0.25)[0]
    assert not any(np.array_equal(c, tight) for c in moved) and not np.array_equal(moved[0], moved[1])
    shifted = preprocess_variants([s], pre, 3, tmp_path, max_level=2, box_jitter=0.25)[0]
    assert not np.array_equal(shifted, moved)  # level 2: acquisition shifts on top

def test_preprocessed_external_set_is_reused_and_invalidated_by_new_settings(tmp_path, data_root, monkeypatch):
    import rcdnet.data.preprocess as preprocess

    samples = [Sample(path=BUSI / "malignant" / f"malignant ({i}).png", label="malignant", key=str(i), source="csv")
               for i in (4, 5, 6)]
    pre = Preprocessor(size=96)
    _, first, _ = preprocess_samples(samples, pre, tmp_path)
    decoded = []
    real_read = preprocess.read_image
    monkeypatch.setattr(preprocess, "read_image", lambda p: decoded.append(p) or real_read(p))
    _, again, _ = preprocess_samples(samples, pre, tmp_path)
    assert decoded == [] and np.array_equal(again, first)  # every image came from the cache
    _, other, _ = preprocess_samples(samples, Preprocessor(size=96, denoise_h=2.0), tmp_path)
    assert sorted(decoded) == sorted(s.path for s in samples)  # new settings: decoded and preprocessed again
    assert not np.array_equal(other, first)
    assert len(list((tmp_path / "preprocessed").iterdir())) == 2  # one cache per preprocessing signature


def test_the_denoising_window_is_a_setting_of_its_own(rng):
    ramp = np.linspace(60, 200, 160)[None, :, None] + rng.normal(0, 8, (120, 160, 1))  # a speckled gradient
    gray = np.repeat(np.clip(ramp, 0, 255).astype(np.uint8), 3, axis=2)
    wide, narrow = Preprocessor(size=64), Preprocessor(size=64, denoise_window=7)
    # the default window keeps the signature caches were made under before the setting existed
    assert wide.signature() == "2209f2eab6dc"  # as computed before data.denoise_window existed
    assert wide.signature() != narrow.signature() and not np.array_equal(wide(gray), narrow(gray))
    with pytest.raises(ValueError, match="data.denoise_window .* odd number of pixels >= 1, not 8"):
        Preprocessor(denoise_window=8)

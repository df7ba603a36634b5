import cv2
import numpy as np
from PIL import Image

from rcdnet.data.decode import read_image
from rcdnet.data.duplicates import find_duplicates, group_samples, label_conflicts
from rcdnet.data.samples import Sample
from rcdnet.data.split import split_train_val
from tests.conftest import BUSI


def _sample(path, label="benign", key=None):
    return Sample(path=path, label=label, key=key or path.stem, source="test")


def _recrop_rescale_mark(src, dst):
    """The kind of copy BUSI is full of: cropped margins, re-scaled, a caliper cross and text added."""
    img = read_image(src)
    h, w = img.shape[:2]
    crop = img[int(0.08 * h): int(0.95 * h), int(0.1 * w): int(0.9 * w)]
    crop = cv2.resize(crop, None, fx=1.3, fy=1.3, interpolation=cv2.INTER_CUBIC)
    ch, cw = crop.shape[:2]
    cv2.drawMarker(crop, (cw // 2, ch // 2), (255, 255, 255), cv2.MARKER_CROSS, 18, 2)
    cv2.putText(crop, "L BREAST 3cm", (10, ch - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    Image.fromarray(crop).save(dst)


def test_finds_a_recropped_rescaled_marked_copy_and_no_false_pairs(tmp_path, data_root, cache_dir):
    a = BUSI / "malignant" / "malignant (10).png"
    copy = tmp_path / "copy.png"
    _recrop_rescale_mark(a, copy)
    # three different lesions; benign (1) and (52) share on-screen "LEFT BREAST" text, a known trap
    others = [BUSI / "benign" / "benign (1).png", BUSI / "benign" / "benign (52).png", BUSI / "malignant" / "malignant (30).png"]
    samples = [_sample(a, "malignant", "a"), _sample(copy, "malignant", "copy")] + [_sample(p, key=p.stem) for p in others]
    pairs, unreadable = find_duplicates(samples, cache_dir=cache_dir)
    assert not unreadable
    found = {frozenset((p.a, p.b)) for p in pairs}
    assert found == {frozenset(("a", "copy"))}, pairs
    (pair,) = pairs
    assert pair.kind == "re-cropped/re-scaled"
    assert 1.2 < max(pair.scale, 1 / pair.scale) < 1.4  # the copy was enlarged 1.3x


def test_exact_copies_group_and_conflicting_labels_are_found(tmp_path, data_root, cache_dir):
    a = BUSI / "benign" / "benign (5).png"
    dup = tmp_path / "dup.png"
    dup.write_bytes(a.read_bytes())
    other = BUSI / "benign" / "benign (6).png"
    samples = [_sample(a, "benign", "a"), _sample(dup, "malignant", "dup"), _sample(other, "benign", "o")]
    pairs, _ = find_duplicates(samples, cache_dir=cache_dir)
    assert [(p.a, p.b, p.kind) for p in pairs] == [("a", "dup", "exact")]
    groups = group_samples(samples, pairs)
    assert groups["a"] == groups["dup"] != groups["o"]
    assert list(label_conflicts(samples, groups)) == [groups["a"]]


def test_no_group_crosses_the_split_and_classes_are_stratified(data_root, cache_dir):
    from rcdnet.data.readers import read_busi

    samples, _ = read_busi(data_root)
    pairs, _ = find_duplicates(samples, cache_dir=cache_dir)
    groups = group_samples(samples, pairs)
    split = split_train_val(samples, groups, 0.3, seed=0)
    side: dict[str, set] = {}
    for s in samples:
        side.setdefault(groups[s.key], set()).add(split[s.key])
    assert all(len(v) == 1 for v in side.values())
    assert len(side) < len(samples) - 50  # BUSI really has many duplicate groups
    for cls in ("benign", "malignant"):
        members = [s for s in samples if s.label == cls]
        frac = np.mean([split[s.key] == "val" for s in members])
        assert 0.25 < frac < 0.35, (cls, frac)
    assert split == split_train_val(samples, groups, 0.3, seed=0)
    assert split != split_train_val(samples, groups, 0.3, seed=1)

"""The BrEaST reader on the real files: labels from the spreadsheet, the normal images left out, every pixel mode read
as the released RGBA file, lesion masks -> boxes, the pixel size in millimetres; and RGBA compositing itself."""

import hashlib
import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from rcdnet.data.boxes import box_of_mask
from rcdnet.data.breast import breast_dir, read_breast
from rcdnet.data.decode import over_black, read_image, read_mask
from rcdnet.data.samples import CLASSES_3
from rcdnet.data.sources import load_sources


@pytest.fixture(scope="module")
def breast(data_root):
    base = breast_dir(data_root)
    if not (base / "BrEaST-Lesions_USG-images_and_masks").is_dir():
        pytest.skip(f"BrEaST not found under {data_root}")
    return base


def test_labels_counts_and_metadata(breast):
    samples, problems = read_breast(breast.parent)
    assert Counter(s.label for s in samples) == {"benign": 154, "malignant": 98}
    assert not problems
    three, _ = read_breast(breast.parent, CLASSES_3)
    normal = sorted(s.key for s in three if s.label == "normal")
    assert normal == ["breast/case045", "breast/case061", "breast/case209", "breast/case213"]
    assert {s.source for s in samples} == {"breast"} and len({s.group for s in samples}) == 252  # one per patient
    # only the label, the mask, the pixel size and the verification are read: never BI-RADS or descriptors
    assert all(set(s.extra) == {"pixel_size_mm", "verification"} for s in samples)
    mm = np.array([s.extra["pixel_size_mm"] for s in samples])
    assert np.all((mm > 0.02) & (mm < 0.3)), (mm.min(), mm.max())  # the dictionary's cm, as millimetres
    assert samples[0].key == "breast/case001" and samples[0].extra["pixel_size_mm"] == pytest.approx(0.078125)


def test_every_pixel_mode_reads_as_the_released_rgba(breast):
    folder = breast / "BrEaST-Lesions_USG-images_and_masks"
    listed = dict(line.split()[::-1] for line in (breast / "PIXEL_SHA256.txt").read_text().splitlines() if line)
    modes = Counter()
    for name, digest in sorted(listed.items()):
        if "_" in name:
            continue
        img = Image.open(folder / name)
        modes[img.mode] += 1
        rgba = np.asarray(img.convert("RGBA"))
        assert hashlib.sha256(rgba.tobytes()).hexdigest() == digest, name  # the released file's pixels
        assert np.array_equal(read_image(folder / name), over_black(rgba)), name
    assert modes["RGBA"] and modes["RGB"] and modes["L"] and sum(modes.values()) == 256


def test_masks_give_boxes_inside_their_images(breast):
    samples, _ = read_breast(breast.parent)
    for s in samples[:60]:
        assert len(s.mask_paths) == 1 and s.mask_paths[0].name == f"{s.path.stem}_tumor.png"
        image = read_image(s.path)
        mask = read_mask(s.mask_paths, image.shape[:2])
        rgba = np.asarray(Image.open(s.mask_paths[0]).convert("RGBA"))
        truth = (rgba[..., :3].min(axis=2) > 127) & (rgba[..., 3] > 127)  # white and opaque
        assert np.array_equal(mask, truth), s.key
        x0, y0, x1, y1 = box_of_mask(mask)
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]


def test_a_loose_breast_image_finds_its_lesion_mask(breast):
    from rcdnet.data.inputs import expand_inputs, masks_beside

    folder = breast / "BrEaST-Lesions_USG-images_and_masks"
    assert masks_beside(folder / "case008.png") == (folder / "case008_tumor.png",)
    found = expand_inputs([folder])
    assert len(found) == 256 and not any("_tumor" in f.stem or "_other" in f.stem for f in found)


def test_breast_pools_with_the_other_sources(data_root, breast):
    samples, _ = load_sources(["udiat", "breast"], data_root)
    assert Counter(s.source for s in samples) == {"breast": 252, "udiat": 163}
    assert all(s.group.startswith("breast/") for s in samples if s.source == "breast")


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_transparent_pixels_are_black_and_never_lesion(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = 255                # white everywhere ...
    rgba[5:10, 5:10, 3] = 255          # ... but opaque only here
    rgba[12:14, 12:14, 3] = 128        # half transparent
    (tmp_path / "m.png").write_bytes(_png(rgba, "RGBA"))
    rgb = read_image(tmp_path / "m.png")
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[7, 7].tolist() == [255, 255, 255]
    assert rgb[12, 12].tolist() == [128, 128, 128]
    assert box_of_mask(read_mask([tmp_path / "m.png"])) == (5, 5, 14, 14)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    (tmp_path / "o.png").write_bytes(_png(opaque, "RGBA"))
    (tmp_path / "g.png").write_bytes(_png(opaque[..., 0], "L"))
    assert np.array_equal(read_image(tmp_path / "o.png"), read_image(tmp_path / "g.png"))  # opaque: unchanged

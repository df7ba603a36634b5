import cv2
import numpy as np

from rcdnet.data.decode import read_image
from rcdnet.data.overlays import detect_overlays, remove_overlays
from tests.conftest import BUSI


def _clean_region(data_root):
    """A tissue-only crop of a real image (the centre of a lesion-free normal image, no text there)."""
    rgb = read_image(BUSI / "normal" / "normal (5).png")
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb[h // 4: 3 * h // 4, w // 4: 3 * w // 4])


def test_finds_drawn_marks_and_text_and_nothing_on_clean_tissue(data_root):
    clean = _clean_region(data_root)
    assert not detect_overlays(clean).any
    marked = clean.copy()
    cv2.drawMarker(marked, (60, 60), (255, 255, 255), cv2.MARKER_CROSS, 15, 2)
    cv2.drawMarker(marked, (150, 90), (255, 255, 255), cv2.MARKER_CROSS, 15, 2)
    cv2.putText(marked, "RT BREAST", (20, 140), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    drawn = np.abs(marked.astype(int) - clean).sum(2) > 0
    ov = detect_overlays(marked)
    assert ov.has_marks and not ov.has_colour
    assert (ov.mask & drawn).sum() > 0.6 * drawn.sum()  # most of what was drawn is found
    assert (ov.mask & ~drawn).sum() < 0.2 * drawn.sum()  # and little else


def test_finds_colour_and_inpainting_removes_marks(data_root):
    clean = _clean_region(data_root)
    marked = clean.copy()
    cv2.circle(marked, (80, 80), 12, (255, 200, 0), 2)  # a yellow caliper ring
    cv2.drawMarker(marked, (150, 60), (255, 255, 255), cv2.MARKER_CROSS, 15, 2)
    ov = detect_overlays(marked)
    assert ov.has_colour and ov.has_marks
    cleaned = remove_overlays(marked, ov)
    drawn = np.abs(marked.astype(int) - clean).sum(2) > 0
    err_before = np.abs(marked[..., 0].astype(int) - clean[..., 0])[drawn].mean()
    err_after = np.abs(cleaned[..., 0].astype(int) - clean[..., 0])[drawn].mean()
    assert err_after < 0.5 * err_before

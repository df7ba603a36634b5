"""Section 2.2 preprocessing: grayscale, resize, denoise, contrast enhancement (CLAHE); decoded once and cached.

Every image is turned into a ``uint8`` (size, size) grayscale array by :class:`Preprocessor`. The model sees it
replicated to three channels and normalised with the backbone's own mean/std (see ``models.input``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from rcdnet.data.boxes import Box, BoxError, box_of_mask, check_box, crop, jitter_box, paste, square_around
from rcdnet.data.content import check_content
from rcdnet.data.decode import ImageReadError, read_image, read_mask, to_gray
from rcdnet.data.samples import DataProblem, Sample
from rcdnet.runtime import parallel_map, with_progress

if TYPE_CHECKING:
    from rcdnet.config import DataConfig

CACHE_ENV = "RCDNET_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rcdnet")


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """(H, W, 3) uint8 RGB -> (size, size) uint8 gray: resize, non-local-means denoise, CLAHE.

    ``letterbox`` keeps the aspect ratio (pads with black) instead of squashing to a square;
    ``inpaint_overlays`` removes calipers, text and colour marks first (``data.overlays``); ``roi_margin`` > 0 is the
    region-of-interest mode: the square around the lesion box (its longer side x (1 + roi_margin), ``data.boxes``)
    is cut out first, and only that is classified."""

    size: int = 224
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    denoise_h: float = 5.0
    denoise_window: int = 15
    letterbox: bool = False
    inpaint_overlays: bool = False
    roi_margin: float = 0.0

    @property
    def roi(self) -> bool:
        """The region-of-interest mode: a lesion box decides what is classified (else the whole image)."""
        return self.roi_margin > 0

    def __post_init__(self) -> None:
        if self.denoise_window < 1 or self.denoise_window % 2 == 0:
            raise ValueError(f"data.denoise_window (the denoising search window) must be an odd number of pixels >= 1, not {self.denoise_window}")

    def __call__(self, rgb: np.ndarray, box: Box | None = None) -> np.ndarray:
        return self.finish(self.cut(rgb, box))

    def cut(self, rgb: np.ndarray, box: Box | None = None) -> np.ndarray:
        """The part of the (H, W, 3) original that is classified: all of it, or the ROI mode's square (black
        where it reaches past the image)."""
        return crop(rgb, self.region(rgb.shape[:2], box)) if self.roi else rgb

    def finish(self, rgb: np.ndarray) -> np.ndarray:
        """Everything after :meth:`cut`: (overlay inpainting), grayscale, resize, denoise, CLAHE."""
        if self.inpaint_overlays:
            from rcdnet.data.overlays import remove_overlays

            rgb = remove_overlays(rgb)
        gray = to_gray(rgb)
        gray = self.resize(gray)
        if self.denoise_h > 0:
            gray = cv2.fastNlMeansDenoising(gray, None, h=self.denoise_h, templateWindowSize=5,
                                            searchWindowSize=self.denoise_window)
        if self.clahe_clip > 0:
            clahe = cv2.createCLAHE(clipLimit=self.clahe_clip, tileGridSize=(self.clahe_tiles, self.clahe_tiles))
            gray = clahe.apply(gray)
        return gray

    def region(self, shape: tuple[int, int], box: Box | None) -> Box:
        """The part of an (H, W) original that the output shows, (x0, y0, x1, y1): the whole image, or in the ROI
        mode the square around ``box`` (which must then be given and fit the image)."""
        h, w = shape[:2]
        if not self.roi:
            return 0, 0, w, h
        if box is None:
            raise BoxError("the model classifies a lesion region: give its box (predict --box x0,y0,x1,y1, box "
                           "columns x0,y0,x1,y1 in a CSV, or a lesion mask beside the image)")
        return square_around(check_box(box, shape), self.roi_margin)

    def geometry(self, plane: np.ndarray, box: Box | None = None) -> np.ndarray:
        """An (H, W) uint8 plane aligned with the image (a lesion mask) -> (size, size), placed exactly where the
        image's pixels land (the ROI mode's cut, then the squash or letterbox), without denoising or CLAHE."""
        return self.resize(crop(plane, self.region(plane.shape, box)) if self.roi else plane)

    def to_original(self, plane: np.ndarray, shape: tuple[int, int], box: Box | None = None) -> np.ndarray:
        """(size, size) map on the preprocessed image (a heat map, the localiser's lesion map) -> (H, W) on the
        original, undoing the squash or letterbox; in the ROI mode (the lesion ``box``) placed on the square that was
        classified, zero elsewhere."""
        h, w = shape[:2]
        x0, y0, x1, y1 = region = self.region(shape, box)
        top, left, nh, nw = self.content_box(y1 - y0, x1 - x0)
        up = cv2.resize(plane[top:top + nh, left:left + nw], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        return up if region == (0, 0, w, h) else paste(up, region, shape)

    def content_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """Where an (h, w) original lands in the (size, size) output: (top, left, height, width). The whole square
        when squashing; the centred, aspect-preserving box when letterboxing (the rest is black padding)."""
        if not self.letterbox:
            return 0, 0, self.size, self.size
        scale = self.size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        return (self.size - nh) // 2, (self.size - nw) // 2, nh, nw

    def resize(self, gray: np.ndarray) -> np.ndarray:
        top, left, nh, nw = self.content_box(*gray.shape)
        if not self.letterbox:
            return cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA)
        out = np.zeros((self.size, self.size), np.uint8)
        out[top:top + nh, left:left + nw] = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA)
        return out

    @classmethod
    def from_config(cls, data: DataConfig) -> Preprocessor:
        """The preprocessing a run's ``data`` settings describe."""
        return cls(size=data.image_size, clahe_clip=data.clahe_clip, clahe_tiles=data.clahe_tiles,
                   denoise_h=data.denoise_h, denoise_window=data.denoise_window, letterbox=data.letterbox,
                   inpaint_overlays=data.inpaint_overlays, roi_margin=data.roi_margin)

    def signature(self) -> str:
        """A short hash of the settings; a setting added later is left out at its neutral value, so caches made
        before it existed stay valid."""
        settings = dataclasses.asdict(self)
        for key, neutral in (("roi_margin", 0.0), ("denoise_window", 15)):
            if settings[key] == neutral:
                del settings[key]
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` so that readers, and other processes writing the same file (torchrun ranks sharing a
    cache), only ever see a complete file (the temporary name is unique per process and thread)."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def file_token(path: Path) -> str:
    """A cache key for a file: its resolved path, size and modification time."""
    st = Path(path).stat()
    return hashlib.sha1(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def pixel_seed(gray: np.ndarray) -> int:
    """A 48-bit seed from an image's shape and pixels (not its path or file time)."""
    return int(hashlib.sha1(repr(gray.shape).encode() + gray.tobytes()).hexdigest()[:12], 16)


def lesion_box(s: Sample, shape: tuple[int, int]) -> Box | None:
    """The sample's lesion box: the one it was given (CSV columns, ``--box``), else the box around its mask(s),
    else None."""
    if s.box is not None:
        return s.box
    if s.mask_paths:
        return box_of_mask(read_mask(s.mask_paths, shape[:2]))
    return None


def cache_name(s: Sample, pre: Preprocessor) -> str:
    """A sample's cache file stem: its file identity and, in the ROI mode, where its box comes from."""
    name = file_token(s.path)
    if pre.roi:
        origin = repr(s.box) if s.box is not None else "|".join(file_token(m) for m in s.mask_paths)
        name += "-" + hashlib.sha1(origin.encode()).hexdigest()[:12]
    return name


def cut_gray(s: Sample, pre: Preprocessor) -> np.ndarray:
    """(h, w) uint8: the sample's grayscale pixels that the model classifies (:meth:`Preprocessor.cut`)."""
    rgb = read_image(s.path)
    return to_gray(pre.cut(rgb, lesion_box(s, rgb.shape[:2]) if pre.roi else None))


def _shifted_copies(s: Sample, pre: Preprocessor, n: int, max_level: int, box_jitter: float) -> np.ndarray:
    """(n, S, S): ``n`` acquisition-shifted copies of a sample, seeded by its pixels; in the ROI mode each copy is
    cut around a jittered box (``box_jitter``), then shifted (``max_level`` 0: not shifted, only cut)."""
    from rcdnet.data.shifts import random_shift

    rgb = read_image(s.path)
    rng = np.random.default_rng(pixel_seed(gray := to_gray(rgb)))
    box = lesion_box(s, gray.shape) if pre.roi else None
    copies = []
    for _ in range(n):
        region = gray
        if box is not None:
            region = to_gray(pre.cut(rgb, jitter_box(box, gray.shape, rng, box_jitter) if box_jitter else box))
        elif pre.roi:
            pre.region(gray.shape, None)  # raises the ROI mode's "give its box" error
        region = random_shift(region, rng, p=1.0, max_level=max_level) if max_level else region
        copies.append(pre.finish(np.repeat(region[..., None], 3, 2)))
    return np.stack(copies)


def preprocess_variants(samples: list[Sample], pre: Preprocessor, n: int, cache_dir: Path | None = None,
                        max_level: int = 2, progress: bool = False, box_jitter: float = 0.0) -> np.ndarray:
    """``n`` randomly shifted versions of each (readable) sample, each shift applied to the raw image and then
    preprocessed exactly like a test image (``data.shifts``); cached. Returns (N, n, size, size) uint8.

    The shifts are seeded by the image's pixels alone, so every copy of the data (another folder, another machine,
    a new modification time) gets the same variants; the cache is keyed by file identity only to skip decoding."""
    jitter = f"-j{box_jitter:g}" if pre.roi and box_jitter else ""
    cache = Path(cache_dir or default_cache_dir()) / "variants" / f"{pre.signature()}-n{n}-l{max_level}{jitter}-pixels"
    cache.mkdir(parents=True, exist_ok=True)
    out = np.zeros((len(samples), n, pre.size, pre.size), np.uint8)

    def variants(s: Sample) -> np.ndarray:
        f = cache / f"{cache_name(s, pre)}.npy"
        if f.exists():
            return np.load(f)
        arr = _shifted_copies(s, pre, n, max_level, box_jitter)
        save_npy_atomic(f, arr)
        return arr

    for i, arr in enumerate(with_progress(parallel_map(variants, samples), len(samples), "shifted variants", progress)):
        out[i] = arr
    return out


def preprocess_masks(samples: list[Sample], pre: Preprocessor, cache_dir: Path | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The samples' lesion masks laid out like their preprocessed images (:meth:`Preprocessor.geometry`): (N, S, S)
    uint8 (255 = lesion, area-averaged at the edges) and (N,) bool, False for a sample without a usable mask (none,
    or one that does not fit its image), whose plane is all zero. Cached like the images."""
    cache = Path(cache_dir or default_cache_dir()) / "masks" / pre.signature()
    cache.mkdir(parents=True, exist_ok=True)

    def load(s: Sample) -> np.ndarray | None:
        if not s.mask_paths:
            return None
        f = cache / f"{cache_name(s, pre)}.npy"
        if f.exists():
            return np.load(f)
        try:
            with Image.open(s.path) as im:
                shape = (im.height, im.width)
            mask = read_mask(s.mask_paths, shape)
            arr = pre.geometry(mask.astype(np.uint8) * 255, lesion_box(s, shape) if pre.roi else None)
        except (ImageReadError, BoxError, OSError):
            return None
        save_npy_atomic(f, arr)
        return arr

    planes = list(parallel_map(load, samples))
    has = np.array([p is not None for p in planes], bool)
    out = np.zeros((len(samples), pre.size, pre.size), np.uint8)
    for i, p in enumerate(planes):
        if p is not None:
            out[i] = p
    return out, has


def preprocess_samples(
    samples: list[Sample], pre: Preprocessor, cache_dir: Path | None = None, progress: bool = False
) -> tuple[list[Sample], np.ndarray, list[DataProblem]]:
    """Preprocess every sample once (cached on disk by file identity and preprocessing parameters).

    Returns the samples that could be read, their images as a (N, size, size) uint8 array, and a problem for
    every file that could not be decoded (those samples are dropped)."""
    cache = Path(cache_dir or default_cache_dir()) / "preprocessed" / pre.signature()
    cache.mkdir(parents=True, exist_ok=True)
    kept, arrays, problems = [], [], []

    def load(s: Sample) -> np.ndarray | DataProblem:
        try:
            f = cache / f"{cache_name(s, pre)}.npy"
            if f.exists():
                return np.load(f)
            rgb = check_content(read_image(s.path), s.path)
            arr = pre(rgb, lesion_box(s, rgb.shape[:2]) if pre.roi else None)
            save_npy_atomic(f, arr)
            return arr
        except (ImageReadError, BoxError, OSError) as exc:
            return DataProblem(str(s.path), str(exc).replace(f"{s.path}: ", ""))

    for s, arr in zip(samples, with_progress(parallel_map(load, samples), len(samples), "preprocess", progress)):
        if isinstance(arr, DataProblem):
            problems.append(arr)
        else:
            kept.append(s)
            arrays.append(arr)
    images = np.stack(arrays) if arrays else np.zeros((0, pre.size, pre.size), np.uint8)
    return kept, images, problems

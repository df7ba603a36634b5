"""Duplicate and same-frame screening, so that no near-copy of a training image sits in a test set.

BUSI holds exact copies, the same frame re-cropped or re-scaled, and the same frame with calipers or text
added. Two images are paired when, after candidate search, a geometric + photometric check confirms it:

1. Candidates: pairs whose perceptual hashes (``imagehash.phash``) are close, plus each image's nearest
   neighbours in an ImageNet-feature space (EfficientNet-Lite0, robust to crop and scale).
2. Verification: ORB key points matched and a similarity transform (rotation, scale, shift) fitted with RANSAC
   (OpenCV); the second image is warped onto the first and the two must agree (normalised cross-correlation on
   the overlap) over a large enough overlap, and the matched points must spread over the image. Marks and text
   change few pixels, so they pass; two different lesions fail even when they share the scanner's on-screen text.

Pairs are joined into groups (connected components). Results are cached by file identity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image

from rcdnet.data.decode import ImageReadError, read_image, to_gray
from rcdnet.data.samples import Sample

ALGO_VERSION = 4


@dataclasses.dataclass(frozen=True)
class ScreenParams:
    work_size: int = 384          # long side the images are compared at
    neighbours: int = 6           # nearest neighbours in feature space checked per image
    phash_candidate: int = 14     # Hamming distance (of 64 bits) under which a pair is a candidate
    min_inliers: int = 15         # RANSAC inliers needed
    min_overlap: float = 0.25     # overlap, as a share of the smaller image, needed
    min_ncc: float = 0.6          # normalised cross-correlation on the overlap needed
    min_spread: float = 0.04      # convex hull of the inliers, as a share of the image: rejects matches on
                                  # shared on-screen text alone (seen on BUSI: ratios 0.003-0.03 for text,
                                  # 0.05 and up for real same-lesion pairs)


@dataclasses.dataclass
class DuplicatePair:
    a: str
    b: str
    kind: str          # "exact", "same-frame" (identical geometry) or "re-cropped/re-scaled"
    phash_distance: int
    inliers: int
    ncc: float
    scale: float

    def to_row(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Print:
    gray: np.ndarray
    phash: imagehash.ImageHash
    kp: np.ndarray      # (K, 2) float32 point coordinates
    desc: np.ndarray | None
    pixel_sha: str


def _fingerprint(rgb: np.ndarray, p: ScreenParams, orb: cv2.ORB) -> _Print:
    gray = to_gray(rgb)
    sha = hashlib.sha256(gray.tobytes() + str(gray.shape).encode()).hexdigest()
    h, w = gray.shape
    s = p.work_size / max(h, w)
    small = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    kps, desc = orb.detectAndCompute(small, None)
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    return _Print(small, imagehash.phash(Image.fromarray(gray)), pts, desc, sha)


def _verify(a: _Print, b: _Print, p: ScreenParams, matcher: cv2.BFMatcher) -> tuple[bool, int, float, float]:
    """Fit a similarity transform b -> a and check photometric agreement on the overlap.
    Returns (same, inliers, ncc, scale)."""
    if a.desc is None or b.desc is None or len(a.desc) < 8 or len(b.desc) < 8:
        return False, 0, 0.0, 0.0
    knn = matcher.knnMatch(b.desc, a.desc, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < p.min_inliers:
        return False, len(good), 0.0, 0.0
    src = b.kp[[m.queryIdx for m in good]]
    dst = a.kp[[m.trainIdx for m in good]]
    M, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0, maxIters=2000,
                                         confidence=0.99)
    if M is None:
        return False, 0, 0.0, 0.0
    n_in = int(inl.sum())
    scale = float(np.hypot(M[0, 0], M[1, 0]))
    if n_in < p.min_inliers or not (0.3 < scale < 3.5):
        return False, n_in, 0.0, scale
    ha, wa = a.gray.shape
    if cv2.contourArea(cv2.convexHull(dst[inl.ravel() == 1])) / (ha * wa) < p.min_spread:
        return False, n_in, 0.0, scale
    warped = cv2.warpAffine(b.gray, M, (wa, ha), flags=cv2.INTER_LINEAR, borderValue=0)
    valid = cv2.warpAffine(np.ones_like(b.gray), M, (wa, ha), flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    overlap = valid.sum() / min(a.gray.size, b.gray.size * scale * scale)
    if overlap < p.min_overlap:
        return False, n_in, 0.0, scale
    x = cv2.GaussianBlur(a.gray, (5, 5), 0)[valid].astype(np.float64)
    y = cv2.GaussianBlur(warped, (5, 5), 0)[valid].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    ncc = float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-9))
    return ncc >= p.min_ncc, n_in, ncc, scale


def _embed(grays: list[np.ndarray]) -> np.ndarray:
    """ImageNet features (EfficientNet-Lite0, global-average pooled), L2-normalised: (N, 1280)."""
    import torch

    from rcdnet.models.input import Normalise, to_grey, to_unit
    from rcdnet.models.pretrained import create_backbone
    from rcdnet.models.registry import input_stats

    model = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=0).eval()
    normalise = Normalise(*input_stats(model))
    feats = []
    with torch.inference_mode():
        for i in range(0, len(grays), 32):
            batch = [cv2.resize(g, (224, 224), interpolation=cv2.INTER_AREA) for g in grays[i:i + 32]]
            feats.append(model(normalise(to_unit(to_grey(np.stack(batch))))))
    f = torch.cat(feats).numpy()
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)


def _candidates(keys: list[str], prints: dict[str, _Print], params: ScreenParams
                ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(pairwise perceptual-hash distances, index pairs worth verifying): near in hash, or among each image's
    nearest neighbours in ImageNet-feature space."""
    candidates: set[tuple[int, int]] = set()
    hashes = np.array([np.asarray(prints[k].phash.hash, bool).ravel() for k in keys])
    ham = (hashes[:, None, :] != hashes[None, :, :]).sum(-1) if len(keys) else np.zeros((0, 0))
    for i, j in zip(*np.nonzero(ham <= params.phash_candidate)):
        if i < j:
            candidates.add((i, j))
    if len(keys) > 1:
        emb = _embed([prints[k].gray for k in keys])
        sim = emb @ emb.T
        np.fill_diagonal(sim, -1)
        nn = np.argsort(-sim, axis=1)[:, : min(params.neighbours, len(keys) - 1)]
        for i in range(len(keys)):
            for j in nn[i]:
                if i != j:
                    candidates.add((min(i, j), max(i, j)))
    return ham, sorted(candidates)


def _verified(keys: list[str], prints: dict[str, _Print], ham: np.ndarray, candidates: list[tuple[int, int]],
              params: ScreenParams, progress: bool) -> list[DuplicatePair]:
    """The candidate pairs that are the same picture: identical pixels, or ORB/RANSAC + correlation agree."""
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs: list[DuplicatePair] = []
    cands = candidates
    if progress:
        from tqdm import tqdm

        cands = tqdm(cands, desc="verify pairs", unit="pair", leave=False)
    for i, j in cands:
        a, b = prints[keys[i]], prints[keys[j]]
        d = int(ham[i, j])
        if a.pixel_sha == b.pixel_sha:
            pairs.append(DuplicatePair(keys[i], keys[j], "exact", d, -1, 1.0, 1.0))
            continue
        same, n_in, ncc, scale = _verify(a, b, params, matcher)
        if same:
            kind = "same-frame" if abs(scale - 1) < 0.02 and a.gray.shape == b.gray.shape else "re-cropped/re-scaled"
            pairs.append(DuplicatePair(keys[i], keys[j], kind, d, n_in, round(ncc, 4), round(scale, 4)))
    return pairs


def find_duplicates(
    samples: list[Sample], params: ScreenParams = ScreenParams(), cache_dir: Path | None = None,
    progress: bool = False,
) -> tuple[list[DuplicatePair], list[tuple[str, str]]]:
    """Screen ``samples`` for duplicates. Returns verified pairs (by sample key) and unreadable files
    as (path, problem). Cached on disk under ``cache_dir/duplicates``."""
    from rcdnet.data.preprocess import default_cache_dir, file_token

    ident = hashlib.sha1(json.dumps(
        [ALGO_VERSION, dataclasses.asdict(params), sorted((s.key, file_token(s.path)) for s in samples)]
    ).encode()).hexdigest()[:16]
    cache_file = Path(cache_dir or default_cache_dir()) / "duplicates" / f"{ident}.json"
    if cache_file.exists():
        saved = json.loads(cache_file.read_text())
        return [DuplicatePair(**r) for r in saved["pairs"]], [tuple(x) for x in saved["unreadable"]]

    orb = cv2.ORB_create(nfeatures=1500)
    prints: dict[str, _Print] = {}
    unreadable: list[tuple[str, str]] = []
    it = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="fingerprint", unit="img", leave=False)
    for s in it:
        try:
            prints[s.key] = _fingerprint(read_image(s.path), params, orb)
        except ImageReadError as exc:
            unreadable.append((str(s.path), str(exc)))
    keys = list(prints)
    ham, candidates = _candidates(keys, prints, params)
    pairs = _verified(keys, prints, ham, candidates, params, progress)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pairs": [p.to_row() for p in pairs], "unreadable": unreadable}))
    os.replace(tmp, cache_file)
    return pairs, unreadable


def group_samples(samples: list[Sample], pairs: list[DuplicatePair]) -> dict[str, str]:
    """Connected components of the duplicate graph: sample key -> group id (the group's first key).
    A sample whose CSV already named a group keeps that link too."""
    parent = {s.key: s.key for s in samples}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(x: str, y: str) -> None:
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)

    for p in pairs:
        if p.a in parent and p.b in parent:
            union(p.a, p.b)
    by_user_group: dict[str, str] = {}
    for s in samples:
        if s.group:
            if s.group in by_user_group:
                union(s.key, by_user_group[s.group])
            else:
                by_user_group[s.group] = s.key
    return {s.key: find(s.key) for s in samples}


def with_duplicate_groups(samples: list[Sample], pairs: list[DuplicatePair] | None = None,
                          cache_dir: Path | None = None, progress: bool = False) -> list[Sample]:
    """``samples`` with the near-duplicates among them (``pairs``, else screened here) in one group each, so that an
    interval resamples them as one case; a sample whose reader or CSV named its group (a patient) keeps it."""
    if pairs is None:
        pairs, _ = find_duplicates(samples, cache_dir=cache_dir, progress=progress)  # unreadable: skipped later
    dup = group_samples(samples, pairs)
    return [dataclasses.replace(s, group=s.group or dup[s.key]) for s in samples]


def label_conflicts(samples: list[Sample], groups: dict[str, str]) -> dict[str, list[Sample]]:
    """Groups whose members carry different labels: group id -> members."""
    members: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        members[groups[s.key]].append(s)
    return {g: m for g, m in members.items() if len({s.label for s in m}) > 1}


def group_pool(samples: list[Sample], pairs: list[DuplicatePair]) -> dict[str, list[Sample]]:
    """Set every sample's split group: duplicates joined with the patient a source names (BUS-UCLM's file prefix, a
    CSV's group column). Returns the label conflicts, found among duplicates alone: one patient may well have a
    benign and a malignant lesion, one image cannot."""
    conflicts = label_conflicts(samples, group_samples([dataclasses.replace(s, group=None) for s in samples], pairs))
    groups = group_samples(samples, pairs)
    for s in samples:
        s.group = groups[s.key]
    return conflicts

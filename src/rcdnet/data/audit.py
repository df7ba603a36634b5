"""``rcdnet audit``: what is in a dataset, and what is wrong with it."""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from pathlib import Path

from PIL import Image

from rcdnet.data.decode import ImageReadError, kind_of, read_image, read_mask
from rcdnet.data.duplicates import find_duplicates, group_pool, group_samples
from rcdnet.data.overlays import detect_overlays
from rcdnet.data.samples import DataProblem, Sample
from rcdnet.runtime import parallel_map


def _fmt_counts(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def inspect_sample(s: Sample) -> dict:
    """One image's facts (size, mode, masks, burnt-in overlays) or the problem that stops it being used."""
    row = {"dataset": s.source, "key": s.key, "path": str(s.path), "label": s.label, "width": "", "height": "",
           "mode": "", "masks": len(s.mask_paths), "marks_or_text": "", "colour": "", "problem": ""}
    try:
        arr = read_image(s.path)
        row["height"], row["width"] = arr.shape[:2]
        ov = detect_overlays(arr)
        row["marks_or_text"], row["colour"] = int(ov.has_marks), int(ov.has_colour)
        kind = kind_of(s.path)
        if kind == "image":
            with Image.open(s.path) as im:
                kind = im.mode
        row["mode"] = kind
        if s.mask_paths:
            read_mask(s.mask_paths, arr.shape[:2])
    except (ImageReadError, OSError) as exc:
        row["problem"] = str(exc)
    return row


def audit(datasets: dict[str, tuple[list[Sample], list[DataProblem]]], cache_dir: Path | None = None,
          progress: bool = True) -> dict:
    """``datasets``: name -> (samples, reader problems). Returns per-image rows, per-dataset summaries,
    duplicate pairs (with group ids), label conflicts and cross-dataset overlap."""
    all_samples = [s for ss, _ in datasets.values() for s in ss]
    rows = list(parallel_map(inspect_sample, all_samples))
    pairs, _ = find_duplicates([s for s, r in zip(all_samples, rows) if not r["problem"]], cache_dir=cache_dir,
                               progress=progress)
    duplicates = group_samples([dataclasses.replace(s, group=None) for s in all_samples], pairs)
    patients = {s.key: s.group for s in all_samples}  # as the source names them (BUS-UCLM, a CSV's group column)
    conflicts = group_pool(all_samples, pairs)  # split groups: duplicates and patients; conflicts: duplicates only
    groups = {s.key: s.group for s in all_samples}
    for r in rows:
        r["group"] = groups[r["key"]]
    source = {s.key: s.source for s in all_samples}
    summaries = {}
    for name, (samples, problems) in datasets.items():
        mine = [r for r in rows if r["dataset"] == name]
        ok = [r for r in mine if not r["problem"]]
        member = Counter(duplicates[r["key"]] for r in mine)
        widths, heights = [r["width"] for r in ok], [r["height"] for r in ok]
        summaries[name] = {
            "images": len(mine),
            "per class": _fmt_counts(Counter(r["label"] for r in mine)),
            "modes": _fmt_counts(Counter(r["mode"] for r in ok)),
            "width min/median/max": f"{min(widths)}/{statistics.median(widths):.0f}/{max(widths)}" if ok else "",
            "height min/median/max": f"{min(heights)}/{statistics.median(heights):.0f}/{max(heights)}" if ok else "",
            "images with 0 / 1 / >1 masks": "/".join(str(sum(1 for r in mine if f(r["masks"])))
                                                    for f in (lambda m: m == 0, lambda m: m == 1, lambda m: m > 1)),
            "unreadable images": sum(1 for r in mine if r["problem"]),
            "reader problems": len(problems),
            "duplicate pairs": sum(1 for p in pairs if source[p.a] == name and source[p.b] == name),
            "duplicate groups (size > 1)": sum(1 for c in member.values() if c > 1),
            "images in duplicate groups": sum(c for c in member.values() if c > 1),
            "label-conflict groups": sum(1 for g, m in conflicts.items() if any(s.source == name for s in m)),
            "patients named by the source": len({patients[r["key"]] for r in mine if patients[r["key"]]}) or "–",
            "split groups (duplicates and patients)": len({groups[r["key"]] for r in mine}),
            "overlays per class (marks/text, colour)": "; ".join(
                f"{c}: {sum(r['marks_or_text'] for r in ok if r['label'] == c)}, "
                f"{sum(r['colour'] for r in ok if r['label'] == c)} of {sum(r['label'] == c for r in ok)}"
                for c in sorted({r["label"] for r in ok})),
        }
        by_key = {s.key: s for s in samples}
        annotated = [(r, by_key[r["key"]]) for r in ok if "marks" in by_key[r["key"]].extra]
        if annotated:  # BUS-UCLM's INFO.csv says which images carry calipers: how far the detector agrees
            agree = sum(bool(r["marks_or_text"]) == s.extra["marks"] for r, s in annotated)
            summaries[name]["overlay detector vs the dataset's own Marks column"] = (
                f"agree on {agree} of {len(annotated)} images "
                f"({sum(s.extra['marks'] for _, s in annotated)} marked)")
    overlap = [p for p in pairs if source[p.a] != source[p.b]]
    return {"rows": rows, "summaries": summaries, "pairs": pairs, "conflicts": conflicts, "overlap": overlap,
            "problems": [p for _, ps in datasets.values() for p in ps]}


def run_audit(target: Path, out: Path, cache_dir: Path | None = None, progress: bool = True) -> dict:
    """``rcdnet audit``: audit every dataset found at ``target`` (:func:`~rcdnet.data.inputs.detect_datasets`) and
    write ``audit_summary.csv``, ``audit_images.csv``, ``audit_duplicates.csv`` and ``audit_problems.csv`` to
    ``out``. Returns :func:`audit`'s result plus ``table`` (the summary rows) and ``bad`` (every problem)."""
    from rcdnet.data.inputs import detect_datasets
    from rcdnet.files import write_csv

    datasets = detect_datasets(target)
    out.mkdir(parents=True, exist_ok=True)
    res = audit(datasets, cache_dir=cache_dir, progress=progress)
    names = list(res["summaries"])
    keys = list(dict.fromkeys(k for n in names for k in res["summaries"][n]))
    res["table"] = [{"": k, **{n: res["summaries"][n].get(k, "–") for n in names}} for k in keys]
    res["bad"] = ([r for r in res["rows"] if r["problem"]]
                  + [{"path": p.path, "problem": p.problem} for p in res["problems"]])
    write_csv(out / "audit_summary.csv", res["table"])
    write_csv(out / "audit_images.csv", res["rows"])
    write_csv(out / "audit_duplicates.csv", [p.to_row() for p in res["pairs"]])
    write_csv(out / "audit_problems.csv", [{"path": r["path"], "problem": r["problem"]} for r in res["bad"]])
    return res

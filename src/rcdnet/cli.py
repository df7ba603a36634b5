"""Command-line tool: ``rcdnet audit | train | cv | benchmark | evaluate | robustness | explain | predict | export | serve``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
from pathlib import Path

from rcdnet import __version__
from rcdnet.files import write_csv

def _common(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--data", help="data root holding BUSI/ and UDIAT_DatasetB/ (default: $RCDNET_DATA, else ../shared/data)")
    p.add_argument("--out", help=out_help)
    p.add_argument("--cache", help="cache folder for preprocessed images and duplicate screening "
                                   "(default: $RCDNET_CACHE, else ~/.cache/rcdnet)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _dataset_options(p: argparse.ArgumentParser, default: str | None) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dataset", default=default, choices=["busi-val", "udiat"],
                   help="busi-val: the run's own validation split; udiat: the external test set")
    g.add_argument("--csv", help="CSV with path,label[,group] (paths relative to the CSV)")
    g.add_argument("--folder", help="folder with one sub-folder per class (benign/, malignant/)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rcdnet", description=__doc__)
    ap.add_argument("--version", action="version", version=f"rcdnet {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    a = sub.add_parser("audit", help="counts, sizes, masks, unreadable files, duplicates, label conflicts, overlap")
    a.add_argument("path", nargs="?", help="a data root (BUSI and UDIAT found inside), a folder per class, or a CSV "
                                           "(default: --data)")
    _common(a, "folder for the audit CSVs (default: ./audit)")

    t = sub.add_parser("train", help="train on BUSI, evaluate on validation and UDIAT, write the report")
    _common(t, "run directory (default: runs/rcdnet)")
    t.add_argument("--config", help="YAML file overriding the packaged defaults (configs/default.yaml)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--limit", type=int, help="a small stratified subset of N training-pool images (smoke runs)")
    t.add_argument("--seed", type=int)
    t.add_argument("--model", help="model name (see --list-models)")
    t.add_argument("--from-scratch", action="store_true", help="no ImageNet weights")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting, e.g. train.lr=3e-4")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--no-eval", action="store_true", help="train only")
    t.add_argument("--list-models", action="store_true", help="print the model names and exit")

    c = sub.add_parser("cv", help="group-aware stratified k-fold cross-validation and the fold ensemble")
    _common(c, "cross-validation directory (default: runs/cv)")
    c.add_argument("--folds", type=int, default=5)
    c.add_argument("--config", help="YAML file overriding the packaged defaults")
    c.add_argument("--epochs", type=int)
    c.add_argument("--limit", type=int, help="a small stratified subset of N training-pool images")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    b = sub.add_parser("benchmark", help="RcdNet against ResNet, MobileNet, RegNet, ViT, ResNeXt and its ablations: "
                                         "several seeds each, CIs, DeLong, size and speed (Tables 1 and 2)")
    _common(b, "benchmark directory (default: runs/benchmark-<profile>)")
    b.add_argument("--profile", default="cpu", help="cpu (2-core CPU, one working session; default), paper (full "
                                                    "size, ImageNet weights for every row, for a GPU), or a YAML file")
    b.add_argument("--jobs", type=int, default=1, help="training runs side by side (CPU threads shared equally)")
    b.add_argument("--seeds", type=int, nargs="+", help="replace the profile's seeds")
    b.add_argument("--explain", action="store_true", help="also score Grad-CAM / Grad-CAM++ heat maps against the "
                                                          "lesion masks for each comparison row (first seed)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every job, e.g. train.epochs=1 or data.limit=60")

    e = sub.add_parser("evaluate", help="metrics with 95%% CIs, ROC, confusion matrix, predictions on a dataset")
    e.add_argument("checkpoint", help="run directory or checkpoint file")
    _dataset_options(e, default="udiat")
    e.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs")
    e.add_argument("--tta", action="store_true", help="average over each image and its mirror")
    e.add_argument("--adabn", action="store_true", help="re-estimate batch-norm statistics on this dataset's "
                                                        "images first (AdaBN; labels are not used)")
    _common(e, "output folder (default: <run dir>/eval)")

    r = sub.add_parser("robustness", help="validation AUC under acquisition shifts; overlay (shortcut) analysis")
    r.add_argument("checkpoint", help="run directory or checkpoint file")
    r.add_argument("--shifts", nargs="+", help="subset of shifts (default: all)")
    r.add_argument("--levels", nargs="+", type=int, default=[1, 2, 3], choices=[1, 2, 3])
    r.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the AUC CIs")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--tta", action="store_true", help="average over each image and its mirror")
    r.add_argument("--adabn", action="store_true", help="AdaBN: re-estimate batch-norm statistics on each shifted set")
    _common(r, "output folder (default: <run dir>/robustness)")

    x = sub.add_parser("explain", help="heat maps (Grad-CAM and friends) with lesion-mask outlines; "
                                       "--evaluate: agreement with the masks; --figure: the paper's Figure 4")
    x.add_argument("checkpoint", help="run directory or checkpoint file")
    x.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER",
                   help="images to explain (a '<name>_mask*.png' beside an image is drawn as its lesion outline)")
    _dataset_options(x, default=None)
    x.add_argument("--method", default="gradcam", help="gradcam (default), gradcam++, scorecam, eigencam, layercam")
    x.add_argument("--layer", help="target layer as a dotted module name (default: the model's conventional one)")
    x.add_argument("--target", default="malignant", help="class to explain: malignant (default), benign, or "
                                                         "'predicted' for each image's predicted class")
    x.add_argument("--evaluate", action="store_true", help="agreement with the lesion masks per method "
                                                           "(--dataset, else busi-val and udiat)")
    x.add_argument("--methods", nargs="+", default=["gradcam", "gradcam++", "eigencam", "layercam", "scorecam"],
                   help="methods for --evaluate")
    x.add_argument("--limit", type=int, help="--evaluate: a stratified subset of N masked images per dataset")
    x.add_argument("--road-images", type=int, default=40, help="--evaluate: images scored with ROAD per dataset "
                                                                "(a stratified subset)")
    x.add_argument("--figure", action="store_true", help="the Figure-4 grid from busi-val and udiat")
    _common(x, "output folder (default: <run dir>/explain)")

    p = sub.add_parser("predict", help="label and malignancy probability per image, DICOM or video")
    p.add_argument("checkpoint", help="run directory, checkpoint file or exported .onnx model")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER",
                   help="PNG/JPEG/BMP/TIFF, DICOM (single or multi-frame), video (mp4, avi, mov, mkv), or folders")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--out", help="write the result to this file instead of the screen")
    p.add_argument("--smooth", type=int, default=5, help="frames in the moving average of a clip's probability")

    xp = sub.add_parser("export", help="ONNX export verified against PyTorch, optional INT8 quantisation")
    xp.add_argument("checkpoint", help="run directory or checkpoint file")
    xp.add_argument("--onnx", required=True, help="output .onnx file (metadata JSON written beside it)")
    xp.add_argument("--int8", action="store_true", help="also write <name>.int8.onnx, calibrated on training "
                                                        "images, with its AUC change on validation and UDIAT")
    xp.add_argument("--verify-images", type=int, default=64, help="validation images compared with PyTorch")
    xp.add_argument("--no-tta", action="store_true", help="export without mirrored-image averaging (half the "
                                                          "compute; the AUC change is reported with --int8)")
    xp.add_argument("--data", help="data root (default: $RCDNET_DATA, else ../shared/data)")
    xp.add_argument("--cache", help="cache folder for preprocessed images")

    sv = sub.add_parser("serve", help="HTTP service (FastAPI) with a web page for clinicians")
    sv.add_argument("model", help="run directory, checkpoint file or exported .onnx model")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload")
    return ap


def _print_table(rows: list[dict], file=sys.stdout) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols), file=file)
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols), file=file)


def cmd_audit(args) -> int:
    from rcdnet.data.audit import audit
    from rcdnet.data.readers import busi_dir, read_busi, read_csv, read_folder, read_udiat, \
        resolve_data_root, udiat_dir
    from rcdnet.data.samples import CLASSES_3

    target = Path(args.path) if args.path else resolve_data_root(args.data)
    is_class_folder = (target / "benign").is_dir() and busi_dir(target) == target and udiat_dir(target) == target
    if target.is_file():
        datasets = {"csv": read_csv(target, CLASSES_3)}
    elif is_class_folder:
        datasets = {"folder": read_folder(target, CLASSES_3)}
    else:  # a data root: whichever known datasets it holds, else a folder per class
        datasets = {}
        if (busi_dir(target) / "benign").is_dir() or (busi_dir(target) / "malignant").is_dir():
            datasets["busi"] = read_busi(target, CLASSES_3)
        if (udiat_dir(target) / "original").is_dir():
            datasets["udiat"] = read_udiat(target, CLASSES_3)
        if not datasets:
            datasets["folder"] = read_folder(target, CLASSES_3)
    for name, (ss, _) in datasets.items():
        for s in ss:
            s.source = name
    out = Path(args.out or "audit")
    out.mkdir(parents=True, exist_ok=True)
    res = audit(datasets, cache_dir=args.cache, progress=not args.quiet)
    names = list(res["summaries"])
    rows = [{"": k, **{n: res["summaries"][n][k] for n in names}} for k in res["summaries"][names[0]]]
    print(f"Audit of {target}\n")
    _print_table(rows)
    print(f"\ncross-dataset overlap: {len(res['overlap'])} pairs"
          + "".join(f"\n  {p.a} = {p.b} ({p.kind})" for p in res["overlap"]))
    if res["conflicts"]:
        print(f"label conflicts ({len(res['conflicts'])} groups; left out of training by default):")
        for members in res["conflicts"].values():
            print("  " + " = ".join(f"{s.key} [{s.label}]" for s in members))
    bad = [r for r in res["rows"] if r["problem"]] + [{"path": p.path, "problem": p.problem} for p in res["problems"]]
    if bad:
        print(f"problems ({len(bad)}):")
        for r in bad[:20]:
            print(f"  {r['problem'] if r['problem'].startswith(r['path']) else r['path'] + ': ' + r['problem']}")
        if len(bad) > 20:
            print(f"  ... {len(bad) - 20} more in {out / 'audit_problems.csv'}")
    write_csv(out / "audit_summary.csv", rows)
    write_csv(out / "audit_images.csv", res["rows"])
    write_csv(out / "audit_duplicates.csv", [p.to_row() for p in res["pairs"]])
    write_csv(out / "audit_problems.csv", [{"path": r["path"], "problem": r["problem"]} for r in bad])
    print(f"\nwritten: {out}/audit_summary.csv, audit_images.csv, audit_duplicates.csv, audit_problems.csv")
    return 0


def cmd_train(args) -> int:
    from rcdnet.config import load_config, parse_set
    from rcdnet.data.readers import resolve_data_root
    from rcdnet.models.registry import list_models
    from rcdnet.pipeline import run
    from rcdnet.training.distributed import teardown

    if args.list_models:
        print("\n".join(list_models()) + "\n(or timm:<any timm model name>)")
        return 0
    over = parse_set(args.set)
    if args.epochs is not None:
        over.setdefault("train", {})["epochs"] = args.epochs
    if args.seed is not None:
        over["seed"] = args.seed
    if args.model:
        over.setdefault("model", {})["name"] = args.model
    if args.from_scratch:
        over.setdefault("model", {})["pretrained"] = False
    cfg = load_config(args.config, over)
    run_dir = Path(args.out or "runs/rcdnet")
    try:
        metrics = run(cfg, resolve_data_root(args.data), run_dir, limit=args.limit, resume=args.resume,
                      cache_dir=args.cache, evaluate=not args.no_eval, progress=not args.quiet)
    finally:
        teardown()
    if "results" in metrics:
        for name, r in metrics["results"].items():
            d = r["operating_points"]["default"]
            print(f"{name:9s} n={r['n']:4d}  AUC {d['auc']['value']:.3f} [{d['auc']['ci'][0]:.3f}, {d['auc']['ci'][1]:.3f}]"
                  f"  accuracy {d['accuracy']['value']:.3f}  sensitivity {d['sensitivity']['value']:.3f}"
                  f"  specificity {d['specificity']['value']:.3f}")
        print(f"report: {run_dir / 'report.md'}")
    return 0


def cmd_benchmark(args) -> int:
    from rcdnet.benchmark import load_profile, run_benchmark
    from rcdnet.config import parse_set
    from rcdnet.data.readers import resolve_data_root

    over = parse_set(args.set)
    profile = load_profile(args.profile, over, args.seeds)
    out = Path(args.out or f"runs/benchmark-{profile.name}")
    s = run_benchmark(profile, resolve_data_root(args.data), out, workers=args.jobs, cache_dir=args.cache,
                      overrides=over, explain=args.explain, progress=not args.quiet,
                      command=" ".join(["rcdnet", *map(shlex.quote, args.argv)]))
    for test_set in ("busi-val", "udiat"):
        print(f"\n{test_set}: AUC, mean ± sd over seeds [95% CI]")
        for rid, st in s["stats"].items():
            if test_set in st:
                a = st[test_set]["auc"]
                print(f"  {rid:20s} {a['mean']:.3f} ± {a['sd']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}]")
    print(f"\ntables and figure: {out}/benchmark.md, table1_internal.csv, table2_external.csv, ablation.csv, "
          "delong.csv, efficiency.csv, roc.png")
    if s["failed_jobs"]:
        print(f"FAILED jobs (see their train.log; run again to retry): {', '.join(s['failed_jobs'])}", file=sys.stderr)
        return 1
    return 0


def _run_dir_of(model: str) -> Path:
    """The folder a model belongs to: a run or cross-validation directory, or the checkpoint's run."""
    p = Path(model)
    if p.is_dir():
        return p
    return p.parent.parent if p.parent.name == "checkpoints" else p.parent


def _selected_dataset(args, predictor, dataset: str) -> tuple[str, list, list]:
    """(name, samples, problems) for --csv, --folder or a named dataset (busi-val: the run's validation split)."""
    from rcdnet.data.readers import load_dataset

    from rcdnet.inference import named_dataset

    if getattr(args, "csv", None) or getattr(args, "folder", None):
        samples, problems = load_dataset(csv_path=args.csv, folder=args.folder, classes=tuple(predictor.classes))
        return Path(args.csv or args.folder).stem, samples, problems
    return (dataset, *named_dataset(predictor, dataset, args.data))


def cmd_cv(args) -> int:
    from rcdnet.config import load_config, parse_set
    from rcdnet.crossval import cross_validate
    from rcdnet.data.readers import resolve_data_root
    from rcdnet.training.distributed import teardown

    over = parse_set(args.set)
    if args.epochs is not None:
        over.setdefault("train", {})["epochs"] = args.epochs
    out = Path(args.out or "runs/cv")
    try:
        summary = cross_validate(load_config(args.config, over), resolve_data_root(args.data), out, args.folds,
                                 limit=args.limit, cache_dir=args.cache, progress=not args.quiet)
    finally:
        teardown()
    if summary is not None:
        print((out / "cv.md").read_text())
    return 0


def cmd_evaluate(args) -> int:
    from rcdnet.evaluation.evaluate import evaluate_samples
    from rcdnet.inference import load_predictor

    if str(args.checkpoint).endswith(".onnx"):
        raise ValueError(f"{args.checkpoint}: evaluate a checkpoint or an ensemble (the ONNX export is verified "
                         "against its checkpoint by `rcdnet export`)")
    from rcdnet.data.preprocess import preprocess_samples
    from rcdnet.inference import Predictor, named_dataset
    from rcdnet.pipeline import choose_thresholds

    predictor = load_predictor(args.checkpoint, tta=True if args.tta else None)
    name, samples, problems = _selected_dataset(args, predictor, args.dataset)
    out = Path(args.out) if args.out else _run_dir_of(args.checkpoint) / "eval"
    if isinstance(predictor, Predictor) and ((args.tta and not predictor.config["eval"]["tta"]) or args.adabn):
        # a test-time variant the operating points were not chosen for: choose them again, for that variant, on the
        # checkpoint's own validation split (AdaBN: adapted to the validation images) -- never on the target set
        val, _ = named_dataset(predictor, "busi-val", args.data)
        val, val_images, _ = preprocess_samples(val, predictor.preprocessor, args.cache)
        chooser = predictor.adapted(val_images) if args.adabn else predictor
        predictor.thresholds = choose_thresholds(chooser, val_images, [s.label for s in val],
                                                 predictor.config["eval"]["target_sensitivity"])
        print(f"operating points chosen again on busi-val for this test-time variant: {predictor.thresholds}",
              file=sys.stderr)
    images = None
    if args.adabn:
        samples, images, bad = preprocess_samples(samples, predictor.preprocessor, args.cache)
        problems += bad
        predictor = predictor.adapted(images)
    res = evaluate_samples(predictor, samples, name, out, args.bootstrap, args.cache, images=images)
    for op, m in res["operating_points"].items():
        print(f"{name} @ {op} (p >= {m['threshold']:.4f}), n={res['n']} ({res['n_malignant']} malignant)")
        for k in ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "f1_macro"):
            print(f"  {k:12s} {m[k]['value']:.3f}  95% CI [{m[k]['ci'][0]:.3f}, {m[k]['ci'][1]:.3f}]")
    skipped = problems + [p for p in res["skipped_files"]]
    if skipped:
        print(f"{len(skipped)} files skipped:", *[f"  {p}" for p in skipped], sep="\n", file=sys.stderr)
    print(f"written: {out}/{name}_metrics.json, {name}_predictions.csv, {name}_roc.png, {name}_confusion.png")
    return 0


def cmd_robustness(args) -> int:
    from rcdnet.data.preprocess import preprocess_samples
    from rcdnet.data.readers import load_dataset
    from rcdnet.evaluation.robustness import overlay_analysis, shift_suite, write_outputs
    from rcdnet.inference import Predictor, resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    predictor = Predictor(ckpt, tta=True if args.tta else None)
    _, samples, _ = _selected_dataset(args, predictor, "busi-val")
    rows, problems = shift_suite(predictor, samples, args.shifts, tuple(args.levels), args.seed, args.bootstrap,
                                 adabn=args.adabn, progress=not args.quiet, cache_dir=args.cache)
    kept, images, _ = preprocess_samples(samples, predictor.preprocessor, args.cache)
    p_mal = predictor.predict_arrays(images)[:, predictor.malignant_index]
    overlays = {"busi-val": overlay_analysis(predictor, kept, p_mal)}
    ext_names = predictor.config["data"].get("external") or []
    for name in ext_names:
        overlays[name] = overlay_analysis(predictor, load_dataset(name, args.data, classes=tuple(predictor.classes))[0])
    out = Path(args.out) if args.out else ckpt.parent.parent / "robustness"
    summary = write_outputs(out, rows, overlays)
    print((out / "robustness.md").read_text())
    for p in problems:
        print(f"skipped {p}", file=sys.stderr)
    print(f"written: {out}/robustness.md, robustness.csv, robustness.json, robustness.png")
    return 0 if summary else 1


def _expand(inputs: list[str]) -> list[Path]:
    """Files as given; folders searched recursively for images, DICOM and video (lesion masks left out)."""
    from rcdnet.data.sources import DICOM_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES

    known = IMAGE_SUFFIXES | DICOM_SUFFIXES | VIDEO_SUFFIXES
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in known and "_mask" not in f.stem)
        else:
            files.append(p)
    return files


def cmd_explain(args) -> int:
    from rcdnet.data.readers import masks_beside
    from rcdnet.data.samples import Sample
    from rcdnet.explain.cam import METHODS
    from rcdnet.explain.run import agreement_table, explain_samples, figure4, write_table
    from rcdnet.inference import Predictor, resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    for m in [args.method] + (args.methods if args.evaluate else []):
        if m not in METHODS:
            raise ValueError(f"unknown heat-map method {m!r}; choose one of {', '.join(METHODS)}")
    predictor = Predictor(ckpt)
    out = Path(args.out) if args.out else ckpt.parent.parent / "explain"
    chosen = args.dataset or args.csv or args.folder
    if not (args.inputs or chosen or args.evaluate or args.figure):
        raise ValueError("nothing to explain: give images or folders, --dataset/--csv/--folder, --evaluate or --figure")
    opts = {"layer": args.layer, "target": args.target}
    written = []
    if args.inputs or (chosen and not args.evaluate):
        if args.inputs:
            files = _expand(args.inputs)
            samples = [Sample(path=f, label="", key=str(f), source="file", mask_paths=masks_beside(f)) for f in files]
            problems = []
        else:
            _, samples, problems = _selected_dataset(args, predictor, args.dataset)
        rows, bad = explain_samples(predictor, samples, out, args.method, **opts)
        _print_table([{k: v for k, v in r.items() if k != "image"} for r in rows])
        for p in problems + bad:
            print(f"skipped {p}", file=sys.stderr)
        write_csv(out / "explain.csv", rows)
        written += [f"{len(rows)} heat-map PNGs", "explain.csv"]
        if not rows:
            return 1
    if args.evaluate or args.figure:
        named = [args.dataset] if chosen else ["busi-val", "udiat"]
        datasets = {n: s for n, s, _ in (_selected_dataset(args, predictor, d) for d in named)}
    if args.evaluate:
        rows, bad = agreement_table(predictor, datasets, args.methods, road_images=args.road_images,
                                    limit=args.limit, progress=not args.quiet, **opts)
        print(write_table(rows, out, f"Heat maps of {ckpt} (target: {args.target})\n"))
        for p in bad:
            print(f"skipped {p}", file=sys.stderr)
        written += ["explain_metrics.md", "explain_metrics.csv", "explain_metrics.json"]
    if args.figure:
        chosen_keys = figure4(predictor, datasets, out / "figure4.png", args.method, cache_dir=args.cache, **opts)
        (out / "figure4.json").write_text(json.dumps(chosen_keys, indent=1))
        written += ["figure4.png", "figure4.json"]
    print(f"written to {out}: {', '.join(written)}")
    return 0


def cmd_predict(args) -> int:
    from rcdnet.inference import load_predictor
    from rcdnet.inference import predict_sources

    predictor = load_predictor(args.checkpoint)
    files = _expand(args.inputs)
    rows, frames, problems = predict_sources(predictor, files, window=args.smooth)
    buf = io.StringIO()
    if args.format == "json":
        json.dump({"predictions": rows, "frames": frames,
                   "errors": [{"file": p.path, "problem": p.problem} for p in problems],
                   "thresholds": predictor.thresholds}, buf, indent=1)
        buf.write("\n")
    elif args.format == "csv" and rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    else:
        _print_table(rows, file=buf)
    if args.out:
        Path(args.out).write_text(buf.getvalue())
    else:
        sys.stdout.write(buf.getvalue())
    if frames and args.format != "json":
        folder = Path(args.out).parent if args.out else Path(".")
        for name, fr in frames.items():
            target = folder / f"{Path(name).name}.frames.csv"
            write_csv(target, fr)
            print(f"per-frame results: {target}", file=sys.stderr)
    predicted = {r["image"] for r in rows}
    for p in problems:
        print(f"{'incomplete' if p.path in predicted else 'skipped'} {p}", file=sys.stderr)
    skipped = sum(p.path not in predicted for p in problems)
    print(f"{len(rows)} predicted, {skipped} skipped", file=sys.stderr)
    return 0 if rows or not files else 1


def cmd_export(args) -> int:
    from rcdnet.deploy.export import export_command

    return export_command(args)


def cmd_serve(args) -> int:
    from rcdnet.serve.app import serve

    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handlers = {"audit": cmd_audit, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "robustness": cmd_robustness, "explain": cmd_explain, "export": cmd_export, "serve": cmd_serve,
                "cv": cmd_cv, "benchmark": cmd_benchmark}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("rcdnet: interrupted (checkpoints written so far are kept; --resume continues)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"rcdnet {args.command}: error: {exc}", file=sys.stderr)
        return 2

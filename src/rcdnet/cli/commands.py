"""One handler per subcommand: parse arguments into a library call, print what it returns."""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path

from rcdnet.config import load_config, parse_set
from rcdnet.evaluation.results import Evaluation
from rcdnet.files import print_table, writable_dir, writable_file, write_csv

FOLDERS = {"audit": "audit", "train": "train", "cv": "cv", "evaluate": "eval", "robustness": "robustness",
           "explain": "explain"}


def output_dir(given: str | None, command: str, model: str | None = None) -> Path:
    """The one rule for where a subcommand writes: ``--out`` if given; else, for a command on a trained model,
    ``<the model's run folder>/<folder>``; else ``runs/<folder>``."""
    if given:
        return Path(given)
    name = FOLDERS.get(command, command)
    if model is None:
        return Path("runs") / name
    p = Path(model)
    run = p if p.is_dir() else p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return run / name


def _err(*lines) -> None:
    print(*lines, sep="\n", file=sys.stderr)


def cmd_audit(args) -> int:
    from rcdnet.data.audit import run_audit
    from rcdnet.data.readers import resolve_data_root

    target = Path(args.path) if args.path else resolve_data_root(args.data)
    out = writable_dir(output_dir(args.out, "audit"))
    res = run_audit(target, out, cache_dir=args.cache, progress=not args.quiet)
    print(f"Audit of {target}\n")
    print_table(res["table"])
    print(f"\ncross-dataset overlap: {len(res['overlap'])} pairs"
          + "".join(f"\n  {p.a} = {p.b} ({p.kind})" for p in res["overlap"]))
    if res["conflicts"]:
        print(f"label conflicts ({len(res['conflicts'])} groups; left out of training by default):")
        for members in res["conflicts"].values():
            print("  " + " = ".join(f"{s.key} [{s.label}]" for s in members))
    bad = res["bad"]
    if bad:
        lines = [r["problem"] if r["problem"].startswith(r["path"]) else f"{r['path']}: {r['problem']}" for r in bad]
        more = [f"... {len(bad) - 20} more in {out / 'audit_problems.csv'}"] if len(bad) > 20 else []
        print(f"problems ({len(bad)}):", *(f"  {x}" for x in lines[:20] + more), sep="\n")
    print(f"\nwritten: {out}/audit_summary.csv, audit_images.csv, audit_duplicates.csv, audit_problems.csv")
    return 0


def cmd_train(args) -> int:
    from rcdnet.cli.parser import flag_overrides
    from rcdnet.data.readers import resolve_data_root
    from rcdnet.models.registry import list_models
    from rcdnet.pipeline import run
    from rcdnet.training.distributed import teardown

    if args.list_models:
        print("\n".join(list_models()) + "\n(or timm:<any timm model name>)")
        return 0
    cfg = load_config(args.config, flag_overrides(args, args.set))
    run_dir = output_dir(args.out, "train")
    try:
        metrics = run(cfg, resolve_data_root(args.data), run_dir, resume=args.resume, cache_dir=args.cache,
                      evaluate=not args.no_eval, progress=not args.quiet)
    finally:
        teardown()
    for name, r in ((n, Evaluation.from_dict(r, n)) for n, r in metrics.get("results", {}).items()):
        d = r.at("default")
        print(f"{name:9s} n={r.n:4d}  AUC {r.auc}  accuracy {d['accuracy'].value:.3f}  sensitivity "
              f"{d['sensitivity'].value:.3f}  specificity {d['specificity'].value:.3f}")
    if "results" in metrics:
        print(f"report: {run_dir / 'report.md'}")
    return 0


def cmd_cv(args) -> int:
    from rcdnet.cli.parser import flag_overrides
    from rcdnet.crossval import cross_validate
    from rcdnet.data.readers import resolve_data_root
    from rcdnet.loso import leave_one_source_out
    from rcdnet.training.distributed import teardown

    if args.seeds and not args.by_source:
        raise ValueError("--seeds repeats the folds of --by-source; k-fold cv takes one --seed")
    out = writable_dir(output_dir(args.out, "loso" if args.by_source else "cv"))
    cfg, root = load_config(args.config, flag_overrides(args, args.set)), resolve_data_root(args.data)
    kw = {"cache_dir": args.cache, "progress": not args.quiet}
    try:
        done = (leave_one_source_out(cfg, root, out, args.seeds, **kw) if args.by_source
                else cross_validate(cfg, root, out, args.folds, **kw))
    finally:
        teardown()
    if done is not None:
        print((out / ("loso.md" if args.by_source else "cv.md")).read_text())
    return 0


def cmd_benchmark(args) -> int:
    from rcdnet.benchmark import load_profile, run_benchmark
    from rcdnet.data.readers import resolve_data_root

    over = parse_set(args.set)
    profile = load_profile(args.profile, over, args.seeds)
    out = output_dir(args.out, f"benchmark-{profile.name}")  # created once the preflight has passed
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
        _err(f"FAILED jobs (see their train.log; run again to retry): {', '.join(s['failed_jobs'])}")
        return 1
    return 0


def cmd_evaluate(args) -> int:
    from rcdnet.data.inputs import chosen_dataset, from_training_sources
    from rcdnet.evaluation.evaluate import evaluate_dataset, predictor_for_evaluation
    from rcdnet.evaluation.ledger import sentence

    predictor = predictor_for_evaluation(args.checkpoint, tta=args.tta, adabn=args.adabn, data_root=args.data,
                                         cache_dir=args.cache, report=_err)
    name, samples, problems = chosen_dataset(predictor, args.dataset, csv=args.csv, folder=args.folder,
                                             data_root=args.data)
    out = writable_dir(output_dir(args.out, "evaluate", args.checkpoint))
    extra = None
    from rcdnet.evaluation.finder import automatic_mode, boxes_where_missing

    if args.found_boxes:
        samples, refused, extra = automatic_mode(predictor, args.checkpoint, args.found_boxes, samples, args.bootstrap)
    else:  # images with no box and no mask (a CSV without box columns, loose files): the run's finder's boxes
        samples, refused = boxes_where_missing(predictor, args.checkpoint, samples)
    problems += refused
    res = evaluate_dataset(predictor, samples, name, out, n_boot=args.bootstrap, adabn=args.adabn,
                           cache_dir=args.cache, progress=not args.quiet, extra=extra,
                           ledger=not from_training_sources(name, predictor))
    for op, m in res.points.items():
        print(f"{name} @ {op} (p >= {m.threshold:.4f}), n={res.n} ({res.n_malignant} malignant)")
        for k in ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "f1_macro"):
            v, ci = m[k].value, m[k].ci
            print(f"  {k:12s} " + ("undefined" if v is None else f"{v:.3f}")
                  + (f"  95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    if res.scorings is not None:
        print(f"ledger: {sentence(name, res.scorings)}")
    if "note" in res.record:
        _err(f"note: {res.record['note']}")
    outside = [s.key for s in samples if s.extra.get("outside_csv_folder")]
    if outside:
        _err(f"note: {len(outside)} CSV rows use relative paths that leave the CSV's folder (e.g. {outside[0]}); "
             "they were read")
    copies = sum(bool(s.extra.get("repeats_file")) for s in samples)
    if copies:
        _err(f"note: {copies} CSV rows repeat files with identical content: each set of copies is one case for the "
             "intervals (one group), never independent patients")
    skipped = [str(p) for p in problems] + res.record["skipped_files"]
    if skipped:
        _err(f"{len(skipped)} files skipped:", *[f"  {p}" for p in skipped])
    roc = f", {name}_roc.png" if (out / f"{name}_roc.png").exists() else ""
    print(f"written: {out}/{name}_metrics.json, {name}_predictions.csv{roc}, {name}_confusion.png")
    return 0


def cmd_robustness(args) -> int:
    from rcdnet.evaluation.robustness import run_robustness
    from rcdnet.predict.pytorch import TorchPredictor

    predictor = TorchPredictor(args.checkpoint, tta=True if args.tta else None)
    out = writable_dir(output_dir(args.out, "robustness", args.checkpoint))
    summary, problems = run_robustness(predictor, out, shifts=args.shifts, levels=tuple(args.levels),
                                       seed=args.seed, n_boot=args.bootstrap, adabn=args.adabn, data_root=args.data,
                                       cache_dir=args.cache, progress=not args.quiet)
    print((out / "robustness.md").read_text())
    for p in problems:
        _err(f"skipped {p}")
    print(f"written: {out}/robustness.md, robustness.csv, robustness.json, robustness.png")
    return 0 if summary else 1


def cmd_explain(args) -> int:
    from rcdnet.data.inputs import VALIDATION, chosen_dataset, loose_files
    from rcdnet.explain.run import check_methods, run_explain
    from rcdnet.predict import model_file, model_kind
    from rcdnet.predict.pytorch import TorchPredictor
    from rcdnet.segment.finder import finder_for

    check_methods([args.method] + (args.methods or []))
    if model_kind(model_file(args.checkpoint)) != "checkpoint":
        raise ValueError(f"{args.checkpoint}: heat maps need a PyTorch checkpoint (a run directory or a .pt file), "
                         "not an exported ONNX model or an ensemble")
    chosen = args.dataset or args.csv or args.folder
    if not (args.inputs or chosen or args.evaluate or args.figure):
        raise ValueError("nothing to explain: give images or folders, --dataset/--csv/--folder, --evaluate or --figure")
    predictor = TorchPredictor(args.checkpoint)
    problems, pictures, datasets = [], None, None

    def dataset(name):
        n, samples, bad = chosen_dataset(predictor, name, csv=args.csv, folder=args.folder, data_root=args.data)
        problems.extend(bad)
        return n, samples

    if args.inputs:
        pictures = loose_files(args.inputs)
    elif chosen and not args.evaluate:
        pictures = dataset(args.dataset)[1]
    if args.evaluate or args.figure:
        names = [args.dataset] if chosen else [VALIDATION, *predictor.config.data.external]
        datasets = dict(dataset(d) for d in names)
    res = run_explain(predictor, output_dir(args.out, "explain", args.checkpoint), pictures=pictures,
                      datasets=datasets, evaluate=args.evaluate, figure=args.figure, method=args.method,
                      methods=args.methods, layer=args.layer, target=args.target, road_images=args.road_images,
                      limit=args.limit, cache_dir=args.cache, progress=not args.quiet,
                      finder=finder_for(predictor, args.checkpoint) if pictures is not None else None)
    print_table([{k: v for k, v in r.items() if k != "image"} for r in res.rows])
    if res.table:
        print(res.table)
    for p in problems + res.problems:
        _err(f"skipped {p}")
    print(f"written to {output_dir(args.out, 'explain', args.checkpoint)}: {', '.join(res.written)}")
    return 1 if pictures is not None and not res.rows else 0


def _render_predictions(rows: list[dict], frames: dict, problems: list, thresholds: dict, fmt: str) -> str:
    buf = io.StringIO()
    if fmt == "json":
        json.dump({"predictions": rows, "frames": frames,
                   "errors": [{"file": p.path, "problem": p.problem} for p in problems],
                   "thresholds": thresholds}, buf, indent=1)
        buf.write("\n")
    elif fmt == "csv":
        write_csv(buf, rows)
    else:
        print_table(rows, file=buf)
    return buf.getvalue()


def cmd_predict(args) -> int:
    from rcdnet.data.boxes import parse_box
    from rcdnet.data.inputs import expand_inputs
    from rcdnet.predict import load_predictor, predict_sources
    from rcdnet.predict.sources import frames_csv_names
    from rcdnet.segment.finder import finder_for

    if args.out:
        writable_file(args.out)
    box = parse_box(args.box) if args.box else None
    predictor = load_predictor(args.checkpoint)
    finder = finder_for(predictor, args.checkpoint, args.finder) if box is None else None
    files = expand_inputs(args.inputs)
    rows, frames, problems = predict_sources(predictor, files, window=args.smooth, progress=len(files) > 1, box=box,
                                             finder=finder)
    text = _render_predictions(rows, frames, problems, predictor.thresholds, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    if frames and args.format != "json":
        folder = Path(args.out).parent if args.out else Path(".")
        csv_names = frames_csv_names(list(frames))
        for name, fr in frames.items():
            target = folder / csv_names[name]
            write_csv(target, fr)
            _err(f"per-frame results: {target}")
    predicted = {r["image"] for r in rows}
    for p in problems:
        _err(f"{'incomplete' if p.path in predicted else 'skipped'} {p}")
    _err(f"{len(rows)} predicted, {sum(p.path not in predicted for p in problems)} skipped")
    return 0 if rows or not files else 1


def cmd_export(args) -> int:
    from rcdnet.deploy.export import export_model

    export_model(args.checkpoint, args.onnx, data=args.data, cache=args.cache, int8=args.int8,
                 verify_images=args.verify_images, tta=False if args.no_tta else None)
    return 0


def cmd_serve(args) -> int:
    from rcdnet.serve.app import serve

    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, workers=args.workers,
          max_megapixels=args.max_megapixels, operating_point=args.operating_point)
    return 0

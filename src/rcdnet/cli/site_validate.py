"""``rcdnet site-validate``: a site's own labelled cases -> how the model does there, its recalibrated operating
points (cross-validated), the learning curve, and a model file carrying the site's calibration."""

from __future__ import annotations

import json
from pathlib import Path


def cmd_site_validate(args) -> int:
    from rcdnet.cli.commands import _err, output_dir
    from rcdnet.data.inputs import chosen_dataset, from_training_sources
    from rcdnet.deploy.site_model import provenance, write_site_model
    from rcdnet.evaluation.calibration import plot_reliability
    from rcdnet.evaluation.ledger import record, sentence
    from rcdnet.runtime import environment
    from rcdnet.evaluation.site_validation import (
        local_cases,
        plot_learning_curve,
        site_markdown,
        validate_site,
    )
    from rcdnet.files import writable_dir
    from rcdnet.predict import load_predictor, model_file

    if not (args.csv or args.folder or args.dataset):
        raise ValueError("give the site's labelled cases: --csv FILE, --folder DIR or --dataset NAME")
    if not 0 < args.target_sensitivity < 1:
        raise ValueError(f"--target-sensitivity must be between 0 and 1, got {args.target_sensitivity}")
    predictor = load_predictor(args.checkpoint)
    predictor = getattr(predictor, "base", predictor)  # a site calibration is fitted to the model as it is
    original = dict(predictor.thresholds)
    if "high_sensitivity" not in original:
        raise ValueError(f"{model_file(args.checkpoint)}: holds no operating points chosen on validation (a run's "
                         "own checkpoint has them): there is nothing to compare the site's with")
    name, samples, problems = chosen_dataset(predictor, args.dataset, csv=args.csv, folder=args.folder,
                                             data_root=args.data)
    where = args.csv or args.folder or args.dataset
    out = writable_dir(output_dir(args.out, "site-validate", args.checkpoint))
    kept, p, y, groups, bad = local_cases(predictor, samples, args.cache, progress=not args.quiet)
    result = validate_site(p, y, groups, original=original, target=args.target_sensitivity, folds=args.folds,
                           method=args.method, n_boot=args.bootstrap, where=str(where))
    result.site.provenance = provenance(model_file(args.checkpoint), str(where), kept, result.summary, original)
    saved = write_site_model(args.checkpoint, result.site, out)
    env = environment()
    if not from_training_sources(name, predictor):  # a site's own cases are a labelled external set too
        result.summary["external_scorings"] = record(out, name, len(kept), result.summary["auc"]["value"], predictor,
                                                     env["commit"])
    (out / "site_validation.json").write_text(json.dumps({"env": env, **result.summary,
                                                          "site_calibration": result.site.to_dict(),
                                                          "model_file": str(saved)}, indent=1))
    plot_learning_curve(result.summary["learning_curve"], args.target_sensitivity, out / "learning_curve.png")
    plot_reliability({"before": result.curves["before"], f"after ({result.site.method}, held out)":
                      result.curves["after"]}, out / "reliability.png")
    (out / "site_validation.md").write_text(site_markdown(result.summary, Path(str(args.checkpoint)).name, str(where),
                                                          env))
    print((out / "site_validation.md").read_text().split("\n## How many", 1)[0].rstrip())
    for p_ in problems + bad:
        _err(f"skipped {p_}")
    print(f"\nsite calibration: {result.site.method}, operating points {result.site.thresholds}")
    print(f"model with the site's calibration: {saved}")
    if "external_scorings" in result.summary:
        print(f"ledger: {sentence(name, result.summary['external_scorings'])}")
    print(f"written: {out}/site_validation.md, site_validation.json, learning_curve.png, reliability.png")
    return 0


def cmd_adapt(args) -> int:
    """AdaBN for a new hospital (step 15 of docs/loso.md): batch-norm statistics re-estimated on the hospital's own
    lesion images (no labels), operating points chosen again on the model's validation split adapted the same way."""
    import hashlib

    import numpy as np

    from rcdnet.cli.commands import _err, output_dir
    from rcdnet.data.inputs import expand_inputs
    from rcdnet.deploy.site_model import write_adapted_model
    from rcdnet.evaluation.thresholds import rechoose_for_variant
    from rcdnet.files import file_sha256, writable_dir
    from rcdnet.models.checkpoint import load_checkpoint
    from rcdnet.predict import model_file, model_kind
    from rcdnet.predict.pytorch import TorchPredictor
    from rcdnet.predict.sources import model_inputs
    from rcdnet.segment.finder import finder_for

    f = model_file(args.checkpoint)
    if model_kind(f) != "checkpoint":
        raise ValueError(f"{args.checkpoint}: adapt a PyTorch checkpoint (a run directory or its .pt file), then "
                         "export the adapted one")
    ckpt = load_checkpoint(f)
    for key, what in (("site_calibration", "a site calibration"), ("site_adaptation", "an adaptation")):
        if ckpt.get(key):
            raise ValueError(f"{f}: already carries {what}, fitted to the model as it was: adapt the original checkpoint")
    predictor = TorchPredictor(f)
    out = writable_dir(output_dir(args.out, "adapt", args.checkpoint))
    try:  # first, so that missing training data fails before the hospital's images are read
        points = rechoose_for_variant(predictor, True, args.data, args.cache)
    except ValueError as exc:
        raise ValueError(f"the operating points are chosen again on the model's own validation split, adapted the "
                         f"same way, and it could not be read (--data must reach its training data): {exc}") from None
    files = expand_inputs(args.inputs)
    images, names, problems = model_inputs(predictor, files, finder_for(predictor, args.checkpoint, args.finder))
    for p in problems:
        _err(f"skipped {p}")
    if len(images) < args.min_images:
        raise ValueError(f"{len(images)} lesion images could be used from {len(files)} files; AdaBN needs at least "
                         f"{args.min_images} of the hospital's own (--min-images; docs/loso.md step 15 used 163-647)")
    adapted = predictor.adapted(images)
    adapted = adapted.with_thresholds(points)
    used = sorted(set(names))
    digest = hashlib.sha256("".join(f"{file_sha256(n)}\n" for n in used).encode()).hexdigest()
    target = write_adapted_model(f, adapted, out, {"n_images": len(images), "n_files": len(used),
                                                   "files_sha256": digest, "skipped": [str(p) for p in problems]})
    m = predictor.malignant_index
    before, after = (float(np.mean(x.predict_arrays(images)[:, m])) for x in (predictor, adapted))
    print(f"adapted on {len(images)} lesion images from {len(used)} files ({len(problems)} skipped); mean "
          f"p(malignant) on them {before:.3f} as trained, {after:.3f} adapted (no labels read: compare with the "
          f"hospital's own malignant share)")
    print(f"operating points chosen again on the model's validation split, adapted the same way: {adapted.thresholds}")
    print(f"adapted model: {target} (predict, evaluate, export, serve and site-validate take it)")
    return 0

"""The command line's arguments: one function per subcommand, registered by :func:`subcommand` (its parser, its
handler, whether it takes options among its input files); that function is the only place a subcommand is named."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rcdnet import __version__
from rcdnet.cli import commands
from rcdnet.cli.pages import cmd_card, cmd_publish
from rcdnet.cli.site_validate import cmd_adapt, cmd_site_validate

SUBCOMMANDS: list[Callable] = []  # in the order `rcdnet --help` lists them


def subcommand(add: Callable) -> Callable:
    """Register ``add(subparsers)``, which adds one subcommand and sets its ``handler`` (and ``intermixed``: it takes
    any number of files with its options among them)."""
    SUBCOMMANDS.append(add)
    return add


def _common(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--data", help="data root holding BUSI/, BUS-UCLM/ and UDIAT_DatasetB/ (default: $RCDNET_DATA, "
                                  "else ../shared/data)")
    p.add_argument("--out", help=out_help)
    p.add_argument("--cache", help="cache folder for preprocessed images and duplicate screening "
                                   "(default: $RCDNET_CACHE, else ~/.cache/rcdnet)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _dataset_options(p: argparse.ArgumentParser, default: str | None) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dataset", default=default,
                   help="val: the run's own validation split; <source>-val: its images from one training source "
                        "(busi-val, udiat-val, ...); or a dataset: busi, bus-uclm, breast, udiat (in-sample for a "
                        "model trained on it: say so, the output does)")
    g.add_argument("--csv", help="CSV with path,label[,group] (paths relative to the CSV)")
    g.add_argument("--folder", help="folder with one sub-folder per class (benign/, malignant/)")


def _training_options(p: argparse.ArgumentParser) -> None:
    """The flags of ``train`` and ``cv`` (each maps to a setting: :data:`FLAGS`)."""
    p.add_argument("--config", help="YAML file overriding the packaged defaults (src/rcdnet/configs/default.yaml), "
                                    "or a packaged recipe by name (paper, roi, ...: src/rcdnet/configs/recipes)")
    p.add_argument("--epochs", type=int, help="train.epochs")
    p.add_argument("--limit", type=int, help="data.limit: a small stratified subset of N training-pool images")
    p.add_argument("--seed", type=int, help="seed")
    p.add_argument("--model", help="model.name (see train --list-models)")
    p.add_argument("--from-scratch", action="store_true", help="model.pretrained false: no ImageNet weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting, e.g. train.lr=3e-4")


@subcommand
def _add_audit(sub) -> None:
    a = sub.add_parser("audit", help="counts, sizes, masks, unreadable files, duplicates, label conflicts, overlap")
    a.add_argument("path", nargs="?", help="a data root (BUSI, BUS-UCLM and UDIAT found inside), a folder per class, or a CSV "
                                           "(default: --data)")
    _common(a, "folder for the audit CSVs (default: runs/audit)")
    a.set_defaults(handler=commands.cmd_audit)


@subcommand
def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train on the configured sources, evaluate on validation and UDIAT, "
                                         "write the report")
    _common(t, "run directory (default: runs/train)")
    _training_options(t)
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--no-eval", action="store_true", help="train only")
    t.add_argument("--list-models", action="store_true", help="print the model names and exit")
    t.set_defaults(handler=commands.cmd_train)


@subcommand
def _add_cv(sub) -> None:
    c = sub.add_parser("cv", help="group-aware stratified k-fold cross-validation and the fold ensemble; or, with "
                                  "--by-source, leave one hospital out in turn")
    _common(c, "cross-validation directory (default: runs/cv, runs/loso with --by-source)")
    c.add_argument("--folds", type=int, default=5, help="k of the k-fold cross-validation (not with --by-source)")
    c.add_argument("--by-source", action="store_true",
                   help="leave one source out: for every source of data.sources, train on the others and score it")
    c.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="with --by-source: repeat every fold with each seed (default: the config's seed)")
    _training_options(c)
    c.set_defaults(handler=commands.cmd_cv)


@subcommand
def _add_benchmark(sub) -> None:
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
    b.set_defaults(handler=commands.cmd_benchmark)


@subcommand
def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="metrics with 95%% CIs, ROC, confusion matrix, predictions on a dataset")
    e.add_argument("checkpoint", help="run directory, checkpoint file, or cross-validation directory (ensemble)")
    _dataset_options(e, default="val")
    e.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs")
    e.add_argument("--tta", action="store_true", help="average over each image and its mirror (one checkpoint)")
    e.add_argument("--adabn", action="store_true", help="re-estimate batch-norm statistics on this dataset's "
                                                        "images first (AdaBN; labels are not used; one checkpoint)")
    e.add_argument("--found-boxes", nargs="?", const=True, default=None, metavar="FINDER",
                   help="region-of-interest models: classify the boxes the lesion finder finds (the automatic mode: "
                        "the run's own, or FINDER, a run directory or segmenter.pt) instead of the masks' boxes; "
                        "how the finder agrees with the masks is reported")
    _common(e, "output folder (default: <run dir>/eval)")
    e.set_defaults(handler=commands.cmd_evaluate)


@subcommand
def _add_robustness(sub) -> None:
    r = sub.add_parser("robustness", help="validation AUC under acquisition shifts; overlay (shortcut) analysis")
    r.add_argument("checkpoint", help="run directory or checkpoint file")
    r.add_argument("--shifts", nargs="+", help="subset of shifts (default: all)")
    r.add_argument("--levels", nargs="+", type=int, default=[1, 2, 3], choices=[1, 2, 3])
    r.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the AUC CIs")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--tta", action="store_true", help="average over each image and its mirror")
    r.add_argument("--adabn", action="store_true", help="AdaBN: re-estimate batch-norm statistics on each shifted set")
    _common(r, "output folder (default: <run dir>/robustness)")
    r.set_defaults(handler=commands.cmd_robustness)


@subcommand
def _add_explain(sub) -> None:
    x = sub.add_parser("explain", help="heat maps (Grad-CAM and friends) with lesion-mask outlines; "
                                       "--evaluate: agreement with the masks; --figure: the paper's Figure 4")
    x.add_argument("checkpoint", help="run directory or checkpoint file")
    x.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER",
                   help="images to explain (a '<name>_mask*.png' beside an image is drawn as its lesion outline)")
    _dataset_options(x, default=None)
    x.add_argument("--method", default="gradcam", help="gradcam (default), gradcam++, scorecam, eigencam, layercam, "
                                                       "centre-prior (the reference that ignores the image)")
    x.add_argument("--layer", help="target layer as a dotted module name (default: the model's conventional one)")
    x.add_argument("--target", default="malignant", help="class to explain: malignant (default), benign, or "
                                                         "'predicted' for each image's predicted class")
    x.add_argument("--evaluate", action="store_true", help="agreement with the lesion masks per method "
                                                           "(--dataset, else val and the model's external sets)")
    x.add_argument("--methods", nargs="+", help="methods for --evaluate (default: gradcam gradcam++ eigencam "
                                                "layercam scorecam)")
    x.add_argument("--limit", type=int, help="--evaluate: a stratified subset of N masked images per dataset")
    x.add_argument("--road-images", type=int, default=40, help="--evaluate: images scored with ROAD per dataset "
                                                                "(a stratified subset)")
    x.add_argument("--figure", action="store_true", help="the Figure-4 grid from val and the model's external sets")
    _common(x, "output folder (default: <run dir>/explain)")
    x.set_defaults(handler=commands.cmd_explain, intermixed=True)


@subcommand
def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="label and malignancy probability per image, DICOM or video")
    p.add_argument("checkpoint", help="run directory, checkpoint file, exported .onnx model, or cross-validation "
                                      "directory (ensemble)")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER",
                   help="PNG/JPEG/BMP/TIFF, DICOM (single or multi-frame), video (mp4, avi, mov, mkv), or folders")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--out", help="write the result to this file instead of the screen (per-frame CSVs beside it)")
    p.add_argument("--smooth", type=int, default=5, help="frames in the moving average of a clip's probability")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="the lesion's box in pixels (region-of-interest models: "
                                                     "the square around it is classified; else the box around "
                                                     "a <stem>_mask*.png beside the image; else each lesion the "
                                                     "run's lesion finder finds)")
    p.add_argument("--finder", metavar="MODEL", help="the lesion finder for images without --box or mask (default: "
                                                     "the one the run shipped, checkpoints/segmenter.pt); a run "
                                                     "directory or segmenter.pt")
    p.set_defaults(handler=commands.cmd_predict, intermixed=True)


@subcommand
def _add_export(sub) -> None:
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
    xp.set_defaults(handler=commands.cmd_export)


@subcommand
def _add_serve(sub) -> None:
    sv = sub.add_parser("serve", help="HTTP service (FastAPI) with a web page for clinicians")
    sv.add_argument("model", help="run directory, checkpoint file, exported .onnx model or cross-validation directory")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload")
    sv.add_argument("--max-megapixels", type=float, help="largest accepted picture (default: 40, or "
                                                          "$RCDNET_MAX_PIXELS / 1e6)")
    sv.add_argument("--workers", type=int, default=2, help="requests classified at once; more get 503 + Retry-After")
    sv.add_argument("--operating-point", help="the decision the page states first: high_sensitivity (the rule-out "
                                              "point; the default where the model has one) or default")
    sv.set_defaults(handler=commands.cmd_serve)


@subcommand
def _add_site_validate(sub) -> None:
    v = sub.add_parser("site-validate", help="a site's own labelled cases: performance there, recalibrated operating "
                                             "points (cross-validated), a learning curve, a model file with them")
    v.add_argument("checkpoint", help="run directory, checkpoint, exported .onnx or cross-validation directory")
    _dataset_options(v, default=None)
    v.add_argument("--target-sensitivity", type=float, default=0.95, help="the site's rule-out target (default 0.95)")
    v.add_argument("--folds", type=int, default=5, help="cross-validation folds, by patient / duplicate group")
    v.add_argument("--method", default="auto", choices=["auto", "temperature", "platt", "isotonic"],
                   help="calibration map (auto: the lowest held-out log loss)")
    v.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (of groups) for the intervals")
    _common(v, "output folder (default: <run dir>/site-validate); the new model file is written there")
    v.set_defaults(handler=cmd_site_validate)



@subcommand
def _add_adapt(sub) -> None:
    a = sub.add_parser("adapt", help="a new hospital's own lesion images, no labels: batch-norm statistics re-estimated "
                                     "on them (AdaBN), a model file with them")
    a.add_argument("checkpoint", help="run directory or checkpoint (PyTorch)")
    a.add_argument("inputs", nargs="+", help="the hospital's images, DICOM files or folders of them (the box: a "
                                             "<stem>_mask.png beside each, else the lesion finder's)")
    a.add_argument("--finder", help="a lesion finder other than the one shipped beside the model")
    a.add_argument("--min-images", type=int, default=50, help="fewest usable lesion images (default 50)")
    _common(a, "output folder (default: <run dir>/adapt); the adapted model is written there")
    a.set_defaults(handler=cmd_adapt)


@subcommand
def _add_publish(sub) -> None:
    pb = sub.add_parser("publish", help="a finished run's report.md (or benchmark.md) and figures into a docs page")
    pb.add_argument("run", help="run directory of `rcdnet train` or `rcdnet benchmark`")
    pb.add_argument("page", help="the Markdown page to write, e.g. docs/results.md (figures beside it)")
    pb.set_defaults(handler=cmd_publish)


@subcommand
def _add_card(sub) -> None:
    cd = sub.add_parser("card", help="the model card of a finished training run, generated from its saved results")
    cd.add_argument("run", help="run directory of `rcdnet train`")
    cd.add_argument("--out", default="docs/model_card.md", help="the page to write (default: docs/model_card.md)")
    cd.add_argument("--loso", help="a finished `rcdnet cv --by-source` folder: its table goes into the card")
    cd.add_argument("--data", help="data root (default: $RCDNET_DATA, else ../shared/data)")
    cd.set_defaults(handler=cmd_card)

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rcdnet")
    ap.add_argument("--version", action="version", version=f"rcdnet {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    ap.description = "rcdnet " + " | ".join(sub.choices)
    ap.subcommands = dict(sub.choices)  # name -> its parser (cli.parse reads options among files with it)
    return ap


# CLI flags of `rcdnet train` and `rcdnet cv` -> (config key, value when given; None = the flag's own value)
FLAGS: dict[str, tuple[str, Any]] = {
    "epochs": ("train.epochs", None),
    "seed": ("seed", None),
    "limit": ("data.limit", None),
    "model": ("model.name", None),
    "from_scratch": ("model.pretrained", False),
}


def flag_overrides(args: Any, sets: list[str]) -> dict:
    """``--set`` items, then every flag of :data:`FLAGS` the user gave, as one nested overrides dict."""
    from rcdnet.config import parse_set

    over = parse_set(sets)
    for flag, (key, fixed) in FLAGS.items():
        given = getattr(args, flag, None)
        if given is None or given is False:
            continue
        node = over
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = given if fixed is None else fixed
    return over

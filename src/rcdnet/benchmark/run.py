"""Run a benchmark profile: every (row, seed) is its own training run, cached and resumable.

    OUT/profile.yaml              the profile as read, and the command-line overrides
    OUT/jobs/<row>/seed<s>/       a complete ``rcdnet train`` run directory (+ job.json: threads, wall time)
    OUT/efficiency.json           per row: parameters, GFLOPs, CPU latency and throughput
    OUT/jobs/<row>/seed<s>/explain/   with ``explain=True``: heat maps against the lesion masks, each comparison
                                  row's first seed (``rcdnet explain --evaluate`` tables)
    OUT/failures.csv              jobs that failed, with the error (the others go on)
    OUT/benchmark.md, *.csv, roc.png   the tables and figure (see :mod:`rcdnet.benchmark.tables`)

A finished job (``metrics.json`` present) is never trained again; an interrupted one resumes from its last
checkpoint. ``jobs > 1`` trains that many jobs side by side, each with an equal share of the CPU threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
import yaml

from rcdnet.benchmark.profile import BenchmarkError, Job, Profile, preflight
from rcdnet.config import RunConfig, read_saved_config
from rcdnet.data.inputs import VALIDATION
from rcdnet.data.prepare import prepare_training_data
from rcdnet.data.preprocess import Preprocessor, preprocess_samples, preprocess_variants
from rcdnet.data.sources import load_dataset
from rcdnet.evaluation.complexity import count_parameters, cpu_speed, gflops
from rcdnet.evaluation.results import Evaluation
from rcdnet.files import write_csv
from rcdnet.models.registry import build_model

EXPLAIN_METHODS = ("gradcam", "gradcam++")


def train_job(cfg: RunConfig, directory: Path, data_root: Path, cache_dir: Path | None, threads: int) -> dict:
    """One job, its output in ``directory/train.log``. Returns {"job": dir, "error": text or None, ...}."""
    from rcdnet.pipeline import (
        run,  # imported here: a spawned worker loads what it needs itself
    )

    directory.mkdir(parents=True, exist_ok=True)
    cfg = cfg.updated({"train": {"threads": threads}})
    t0 = time.time()
    with open(directory / "train.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            resume = (directory / "checkpoints" / "last.pt").is_file()
            metrics = run(cfg, data_root, directory, resume=resume, cache_dir=cache_dir, progress=False)
        except Exception as exc:  # a failed job is reported; the others go on
            traceback.print_exc()
            return {"job": str(directory), "error": f"{type(exc).__name__}: {exc}"}
    info = {"threads": threads or torch.get_num_threads(), "wall_seconds": round(time.time() - t0, 1),
            "resumed": resume}
    (directory / "job.json").write_text(json.dumps(info, indent=1))
    aucs = {k: Evaluation.from_dict(r, k).auc.value for k, r in metrics["results"].items()}
    return {"job": str(directory), "error": None, "aucs": aucs, **info}


def _flat(d: dict, prefix: str = "") -> dict:
    return {k2: v2 for k, v in d.items()
            for k2, v2 in (_flat(v, f"{prefix}{k}.").items() if isinstance(v, dict) else [(f"{prefix}{k}", v)])}


def check_finished(jobs: list[Job]) -> None:
    """A job found finished must have been trained with the settings the profile asks for now (a changed profile
    or changed packaged defaults must not silently reuse old runs). The saved config is read like any run's, so a
    setting added since takes its packaged default (the old behaviour)."""
    problems = []
    for job in jobs:
        saved = job.directory / "config.yaml"
        if job.done and saved.is_file():
            have, want = _flat(read_saved_config(saved).to_dict()), _flat(job.config.to_dict())
            diff = sorted(k for k in want if k != "train.threads" and have[k] != want[k])
            if diff:
                problems.append(f"{job.name}: " + ", ".join(f"{k} {have[k]!r} -> {want[k]!r}" for k in diff))
    if problems:
        raise BenchmarkError("finished jobs were trained with other settings than the profile now asks for:\n  "
                             + "\n  ".join(problems) + "\n(use another --out, or delete those job directories)")


def prefill_caches(profile: Profile, data_root: Path, cache_dir: Path | None, progress: bool) -> None:
    """Preprocess every image (and the shifted training variants) once, before jobs run side by side."""
    seen = set()
    for row in profile.rows.values():
        cfg = dataclasses.replace(row.config, seed=profile.seeds[0])
        aug = cfg.augment
        key = json.dumps([dataclasses.asdict(cfg.data), aug.ultrasound_variants, aug.ultrasound_level, aug.box_jitter],
                         sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        data = prepare_training_data(cfg, data_root, cache_dir=cache_dir, progress=progress)
        pre = Preprocessor.from_config(cfg.data)
        if aug.ultrasound_variants:
            preprocess_variants(data.subset("train")[0], pre, aug.ultrasound_variants, cache_dir, aug.ultrasound_level,
                                progress, aug.box_jitter)
        for name in cfg.data.external:
            preprocess_samples(load_dataset(name, data_root)[0], pre, cache_dir, progress)


def run_jobs(pending: list[Job], data_root: Path, cache_dir: Path | None, workers: int,
             report=print) -> list[dict]:
    """Train ``pending`` jobs, ``workers`` at a time. Returns one result per job (failures included)."""
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    results: list[dict] = []
    if not pending:
        return results

    def note(i: int, job: Job, res: dict) -> None:
        if res["error"]:
            report(f"[{i}/{len(pending)}] {job.name}: FAILED: {res['error']} (log: {job.directory / 'train.log'})")
        else:
            aucs = ", ".join(f"{k} AUC {v:.3f}" for k, v in res["aucs"].items())
            report(f"[{i}/{len(pending)}] {job.name}: done in {res['wall_seconds'] / 60:.1f} min ({aucs})")
        results.append({"name": job.name, **res})

    if workers <= 1:
        for i, job in enumerate(pending, 1):
            report(f"[{i}/{len(pending)}] {job.name}: training ({job.row.label})")
            note(i, job, train_job(job.config, job.directory, data_root, cache_dir, threads))
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_job, job.config, job.directory, data_root, cache_dir, threads): job
                   for job in pending}
        report(f"{len(pending)} jobs, {workers} side by side with {threads} thread(s) each")
        for i, fut in enumerate(as_completed(futures), 1):
            try:
                res = fut.result()
            except Exception as exc:  # a worker that died (e.g. killed for memory) fails its job, not the benchmark
                res = {"job": str(futures[fut].directory), "error": f"worker process failed: {exc!r}"}
            note(i, futures[fut], res)
    return results


def measure_efficiency(profile: Profile, out: Path, report=print) -> dict[str, dict]:
    """Parameters, GFLOPs (at 224 and at the profile's size) and CPU speed per row; cached in efficiency.json.
    Measured one model at a time after training, on untrained weights (speed does not depend on their values)."""
    path = out / "efficiency.json"
    eff = json.loads(path.read_text()) if path.is_file() else {}
    for row in profile.rows.values():
        if row.id in eff:
            continue
        size = row.config.data.image_size
        model = build_model(row.config, 2, pretrained=False)
        at224 = build_model(row.config, 2, pretrained=False, image_size=224)
        eff[row.id] = {"params_m": count_parameters(model) / 1e6, "gflops_224": gflops(at224, 224),
                       "image_size": size, "gflops": gflops(model, size), **cpu_speed(model, size)}
        report(f"{row.id}: {eff[row.id]['params_m']:.2f} M parameters, {eff[row.id]['gflops_224']:.2f} GFLOPs @224, "
               f"{eff[row.id]['latency_ms']:.1f} ms / image, {eff[row.id]['throughput_img_s']:.0f} img/s @{size}")
        path.write_text(json.dumps(eff, indent=1))
    return eff


def explain_rows(profile: Profile, out: Path, data_root: Path, methods: tuple[str, ...] = EXPLAIN_METHODS,
                 limit: int | None = None, report=print) -> dict[str, list[dict]]:
    """Heat-map agreement with the lesion masks (energy in mask, pointing game, ROAD) on BUSI validation and UDIAT
    for the first finished seed of every comparison row; cached in that job's ``explain/explain_metrics.json``.
    ``limit``: a stratified, seeded subset of that many masked images per set (smoke runs)."""
    from rcdnet.data.inputs import chosen_dataset
    from rcdnet.explain.table import agreement_table, write_table
    from rcdnet.predict.pytorch import TorchPredictor

    tables = {}
    for rid in profile.comparison:
        job = next((j for j in profile.jobs(out) if j.row.id == rid and j.done), None)
        if job is None:
            continue
        cached = job.directory / "explain" / "explain_metrics.json"
        if not cached.is_file():
            report(f"{job.name}: heat maps ({', '.join(methods)}) against the lesion masks")
            predictor = TorchPredictor(job.directory / "checkpoints" / "best.pt")
            datasets = {n: chosen_dataset(predictor, n, data_root=data_root)[1] for n in (VALIDATION, "udiat")}
            rows, _ = agreement_table(predictor, datasets, list(methods), road_images=min(40, limit or 40),
                                      limit=limit)
            write_table(rows, job.directory / "explain", f"Heat maps of {job.name} (target: malignant)\n")
        tables[rid] = json.loads(cached.read_text())
    return tables


def run_benchmark(profile: Profile, data_root: Path, out: Path, *, workers: int = 1, cache_dir: Path | None = None,
                  overrides: dict | None = None, explain: bool = False, progress: bool = True,
                  command: str = "", report=print) -> dict:
    """Preflight, train what is not finished, measure, and write the tables. Returns the summary."""
    from rcdnet.benchmark.tables import write_tables

    for line in preflight(profile):
        report(f"preflight: {line}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.yaml").write_text(yaml.safe_dump({**profile.source, "overrides": overrides or {}},
                                                     sort_keys=False))
    jobs = profile.jobs(out)
    check_finished(jobs)
    pending = [j for j in jobs if not j.done]
    report(f"profile {profile.name}: {len(profile.rows)} rows x {len(profile.seeds)} seeds = {len(jobs)} jobs, "
           f"{len(jobs) - len(pending)} finished earlier")
    if pending:
        prefill_caches(profile, data_root, cache_dir, progress)
    results = run_jobs(pending, data_root, cache_dir, workers, report)
    failed = [r for r in results if r["error"]]
    write_csv(out / "failures.csv", [{"job": r["name"], "error": r["error"]} for r in failed], ["job", "error"])
    efficiency = measure_efficiency(profile, out, report)
    heat = explain_rows(profile, out, data_root, report=report) if explain else {}
    summary = write_tables(profile, out, efficiency, heat, command=command)
    summary["failed_jobs"] = [r["name"] for r in failed]
    return summary

"""Benchmark profiles: which models, seeds and shared recipe; one job per (row, seed).

A profile is a YAML file (packaged: ``configs/benchmark/{cpu,paper}.yaml``) with ``seeds``, ``split_seed``,
``config`` (settings shared by every job, on top of the packaged defaults), ``reference`` (the row DeLong compares
with every other), and the rows of the ``comparison`` (Tables 1 and 2) and ``ablation`` tables, each
``{id, label, set}`` where ``set`` holds the row's own settings. A row id used in both tables is one set of jobs.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import yaml

from rcdnet.config import ConfigError, RunConfig, config_from_dict, default_dict, merge
from rcdnet.models.pretrained import WeightsUnavailable, check_weights
from rcdnet.models.registry import resolve

PROFILES = ("cpu", "paper")


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    label: str
    config: RunConfig         # resolved job config (its seed is replaced by each job's)

    @property
    def weights(self) -> str:
        return "ImageNet" if self.config.model.pretrained else "scratch"

    @property
    def timm_name(self) -> str:
        return resolve(self.config.model.name)[0]


@dataclasses.dataclass(frozen=True)
class Job:
    row: Row
    seed: int
    directory: Path

    @property
    def config(self) -> RunConfig:
        return dataclasses.replace(self.row.config, seed=self.seed)

    @property
    def done(self) -> bool:
        return (self.directory / "metrics.json").is_file()

    @property
    def name(self) -> str:
        return f"{self.row.id}/seed{self.seed}"


@dataclasses.dataclass
class Profile:
    name: str
    seeds: list[int]
    reference: str
    rows: dict[str, Row]            # every distinct row, by id
    comparison: list[str]           # row ids of Tables 1 and 2
    ablation: list[tuple[str, str]]  # (row id, label in the ablation table)
    source: dict                    # the profile as read (saved beside the results)

    def jobs(self, out: Path) -> list[Job]:
        """Seed-major order, so that a partly finished benchmark already has every row's first seed."""
        return [Job(self.rows[r], s, Path(out) / "jobs" / r / f"seed{s}") for s in self.seeds for r in self.rows]


def read_profile(name_or_path: str) -> dict:
    if name_or_path in PROFILES:
        text = resources.files("rcdnet").joinpath(f"configs/benchmark/{name_or_path}.yaml").read_text()
    else:
        p = Path(name_or_path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such profile file (packaged profiles: {', '.join(PROFILES)})")
        text = p.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name_or_path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: a profile must be a mapping")
    return data


def load_profile(name_or_path: str, overrides: dict | None = None, seeds: list[int] | None = None) -> Profile:
    """Read and resolve a profile; ``overrides`` (``--set``) apply to every job after the profile's ``config``."""
    src = read_profile(name_or_path)
    missing = [k for k in ("seeds", "comparison") if not src.get(k)]
    if missing:
        raise ConfigError(f"{name_or_path}: missing {', '.join(missing)}")
    base = merge(default_dict(), src.get("config") or {}, f"{name_or_path}: config")
    if src.get("split_seed") is not None:
        base["data"]["split_seed"] = int(src["split_seed"])
    if overrides:
        base = merge(base, overrides, "command line")
    rows: dict[str, Row] = {}

    def add(entry: dict, table: str) -> str:
        if not isinstance(entry, dict) or "id" not in entry:
            raise ConfigError(f"{name_or_path}: every {table} row needs an id ({entry!r})")
        rid = str(entry["id"])
        if "set" in entry or rid not in rows:
            where = f"{name_or_path}: {table} row {rid}"
            cfg = config_from_dict(merge(base, entry.get("set") or {}, where), where)
            if rid in rows and rows[rid].config != cfg:
                raise ConfigError(f"{name_or_path}: row {rid} is defined twice with different settings")
            rows[rid] = Row(rid, str(entry.get("label", rid)), cfg)
        return rid

    comparison = [add(e, "comparison") for e in src["comparison"]]
    ablation = [(rid, str(e.get("label", rid))) for e in src.get("ablation") or [] for rid in [add(e, "ablation")]]
    reference = str(src.get("reference", comparison[0]))
    if reference not in rows:
        raise ConfigError(f"{name_or_path}: reference row {reference!r} is not a row of the profile")
    return Profile(str(src.get("name", Path(name_or_path).stem)), [int(s) for s in (seeds or src["seeds"])],
                   reference, rows, comparison, ablation, src)


def preflight(profile: Profile) -> list[str]:
    """Check every row before any training: the model exists and, where ImageNet weights are asked for, they can
    be had. Returns one line per row saying where its weights come from; raises with every problem listed."""
    problems, lines = [], []
    checked: dict[tuple, str | Exception] = {}
    for row in profile.rows.values():
        m = row.config.model
        try:
            timm_name = resolve(m.name)[0]
        except ValueError as exc:
            problems.append(f"row {row.id}: {exc}")
            continue
        if not m.pretrained:
            lines.append(f"{row.id}: {timm_name}, from scratch")
            continue
        key = (timm_name, m.weights)
        if key not in checked:
            try:
                checked[key] = check_weights(timm_name, m.weights)
            except WeightsUnavailable as exc:
                checked[key] = exc
        if isinstance(checked[key], Exception):
            problems.append(f"row {row.id}: {checked[key]}")
        else:
            lines.append(f"{row.id}: {timm_name}, ImageNet weights from {checked[key]}")
    if problems:
        raise BenchmarkError("the benchmark cannot start:\n  " + "\n  ".join(problems) +
                             "\n(no job was started; fix the profile, give model.weights: PATH, or set "
                             "model.pretrained: false for those rows)")
    return lines


class BenchmarkError(ValueError):
    pass

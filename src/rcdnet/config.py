"""The run configuration: packaged YAML defaults < a user's YAML file < CLI flags, as frozen dataclasses.

``configs/default.yaml`` holds every default (with comments); the dataclasses below hold the types. One loader,
:func:`config_from_dict`, lays any mapping onto the defaults (so a run saved before a setting existed still
resumes and its checkpoints still load), rejects unknown settings with the file and the dotted path, and checks
every value's type. ``train``, ``cv``, ``benchmark``, ``--resume`` and the checkpoint readers all use it.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class DataConfig:
    sources: tuple[str, ...]
    classes: int
    val_fraction: float
    split_seed: int | None
    limit: int | None
    drop_label_conflicts: bool
    external: tuple[str, ...]
    image_size: int
    clahe_clip: float
    clahe_tiles: int
    denoise_h: float
    denoise_window: int
    letterbox: bool
    inpaint_overlays: bool
    roi_margin: float

    @property
    def roi(self) -> bool:
        """The region-of-interest mode (``roi_margin`` > 0): see :class:`rcdnet.data.preprocess.Preprocessor`."""
        return self.roi_margin > 0


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    crop_scale_min: float
    rotation: float
    mixup_alpha: float
    label_smoothing: float
    ultrasound_variants: int
    ultrasound_p: float
    ultrasound_level: int
    box_jitter: float


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    pretrained: bool
    weights: str | None
    dsc_channels: int
    use_cbam: bool
    drop_rate: float
    freeze_stages: int


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    select_metric: str
    balance_sources: bool
    localise_weight: float
    ema_decay: float
    swa_start: int
    swa_lr: float
    members: int
    patience: int
    threads: int
    device: str
    precision: str


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    bootstrap: int
    target_sensitivity: float
    temperature_scaling: bool
    tta: bool
    adabn: bool


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    epochs: int
    image_size: int
    batch_size: int
    lr: float
    freeze_blocks: int
    min_area: float
    target_sensitivity: float


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int
    data: DataConfig
    augment: AugmentConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    segment: SegmentConfig

    @property
    def split_seed(self) -> int:
        """The seed of the train / validation split: ``data.split_seed``, else the run's ``seed``."""
        return self.seed if self.data.split_seed is None else self.data.split_seed

    def to_dict(self) -> dict:
        """Plain nested dict (lists, not tuples): what config.yaml and checkpoints hold."""
        return _plain(dataclasses.asdict(self))

    def updated(self, overrides: dict, where: str = "command line") -> RunConfig:
        """A copy with ``overrides`` (a nested dict such as ``{"data": {"limit": 60}}``) laid on top."""
        return _checked(_build(RunConfig, merge(self.to_dict(), overrides, where), where), where)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def default_dict() -> dict:
    """The packaged defaults as a nested dict."""
    return yaml.safe_load(resources.files("rcdnet").joinpath("configs/default.yaml").read_text())


def merge(base: dict, over: dict, where: str) -> dict:
    """``over`` laid onto a copy of ``base``; a key ``base`` lacks is a :class:`ConfigError` naming ``where``."""
    if not isinstance(over, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {over!r}")
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in out:
            raise ConfigError(f"{where}: unknown setting {k!r} (known: {', '.join(sorted(base))})")
        out[k] = merge(out[k], v, f"{where}.{k}") if isinstance(out[k], dict) else v
    return out


def _value(tp: Any, v: Any, where: str) -> Any:
    """``v`` checked against the annotation ``tp``; numbers written as text ('3e-4': YAML reads it as a string)
    become numbers."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if v is None else _value(args[0], v, where)
    if typing.get_origin(tp) is tuple:
        if isinstance(v, str) or not isinstance(v, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {v!r}")
        return tuple(_value(typing.get_args(tp)[0], x, where) for x in v)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: expected true or false, got {v!r}")
        return v
    if tp in (int, float):
        if isinstance(v, str):
            try:
                v = float(v) if tp is float or any(c in v for c in ".eE") else int(v)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (tp is int and v != int(v)):
            raise ConfigError(f"{where}: expected {'a whole number' if tp is int else 'a number'}, got {v!r}")
        return tp(v)
    if tp is str and not isinstance(v, str):
        raise ConfigError(f"{where}: expected text, got {v!r}")
    return v


def _build(cls: type, d: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: (_build if dataclasses.is_dataclass(hints[f.name]) else _value)(
        hints[f.name], d[f.name], f"{where}.{f.name}") for f in dataclasses.fields(cls)})


def _renamed(d: dict) -> dict:
    """Settings renamed since a run was saved, under their new names: ``data.dataset: busi`` (one training source,
    before several were possible) is ``data.sources: [busi]``."""
    data = d.get("data")
    if isinstance(data, dict) and "dataset" in data and "sources" not in data:
        d = {**d, "data": {("sources" if k == "dataset" else k): ([v] if k == "dataset" else v)
                           for k, v in data.items()}}
    return d


def config_from_dict(d: dict | None, where: str) -> RunConfig:
    """Any (partial) settings mapping -> a complete, checked :class:`RunConfig` (defaults for what is missing)."""
    return _checked(_build(RunConfig, merge(default_dict(), _renamed(d or {}), where), where), where)


def _checked(cfg: RunConfig, where: str) -> RunConfig:
    """``cfg``, once the values whose type alone does not make them valid are checked."""
    d, a, t, s = cfg.data, cfg.augment, cfg.train, cfg.segment
    for bad, message in [
        (d.denoise_window < 1 or d.denoise_window % 2 == 0,  # OpenCV's search window has a centre pixel
         f"data.denoise_window must be an odd number of pixels >= 1, got {d.denoise_window}"),
        (s.image_size % 32 or s.image_size < 64,  # the encoder halves the image five times
         f"segment.image_size must be a multiple of 32 and at least 64, got {s.image_size}"),
        (t.members < 1, f"train.members must be at least 1, got {t.members}"),
        (t.patience < 0 or (t.patience and t.swa_start), "train.patience must be >= 0 (0: every epoch is trained), and "
         f"0 with SWA (train.swa_start > 0 averages up to the last epoch), got {t.patience}"),
        (t.members > 1 and t.localise_weight > 0, "train.members > 1 averages classifiers; a localisation head "
         "(train.localise_weight > 0) is trained by single models only"),
        (not 0 < s.target_sensitivity <= 1, f"segment.target_sensitivity must be in (0, 1], got {s.target_sensitivity}"),
        (not 0 <= a.ultrasound_level <= 3, f"augment.ultrasound_level must be 0-3, got {a.ultrasound_level}"),
        (a.ultrasound_variants and not a.ultrasound_level and not (d.roi and a.box_jitter > 0), "augment.ultrasound_"
         "level 0 makes copies that differ only by a jittered box: it needs data.roi_margin > 0 and box_jitter > 0")]:
        if bad:
            raise ConfigError(f"{where}: {message}")
    return cfg


def _read_yaml(p: Path) -> dict:
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must be a mapping of settings")
    return data


def recipes() -> list[str]:
    """The packaged recipes (``src/rcdnet/configs/recipes/<name>.yaml``): ``--config <name>`` loads one."""
    return sorted(f.name[:-5] for f in resources.files("rcdnet").joinpath("configs/recipes").iterdir()
                  if f.name.endswith(".yaml"))


def config_file(path: str | Path) -> Path:
    """A config file given by its path, or a packaged recipe by its name (``roi``, ``paper``, ...)."""
    p = Path(path)
    if p.is_file() or p.suffix or len(p.parts) > 1:
        return p
    if str(path) in recipes():
        return Path(str(resources.files("rcdnet").joinpath(f"configs/recipes/{path}.yaml")))
    raise ConfigError(f"{path}: neither a config file nor a packaged recipe (one of {', '.join(recipes())})")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Packaged defaults, then the YAML file ``path`` or packaged recipe (if any), then ``overrides`` (CLI flags)."""
    path = config_file(path) if path is not None else None
    cfg = config_from_dict(_read_yaml(path) if path is not None else {}, str(path or "defaults"))
    return cfg.updated(overrides) if overrides else cfg


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# settings added after runs were saved without them, with the value that gives those runs' behaviour
AS_BEFORE_ADDED = {"train": {"members": 1, "patience": 0}}


def read_saved_config(path: Path) -> RunConfig:
    """A run's ``config.yaml``, completed for settings added since: with the value that keeps its behaviour where
    that is not today's default (:data:`AS_BEFORE_ADDED`), else with today's default."""
    saved = _read_yaml(Path(path))
    for section, values in AS_BEFORE_ADDED.items():
        if isinstance(saved.get(section), dict):
            saved[section] = {**values, **saved[section]}
    return config_from_dict(saved, str(path))


def parse_set(items: list[str]) -> dict:
    """``["train.lr=3e-4", "model.use_cbam=false"]`` -> nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


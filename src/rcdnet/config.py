"""Configuration: packaged YAML defaults, overridden by a user's YAML file, overridden by CLI flags."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def default_config() -> dict:
    text = resources.files("rcdnet").joinpath("configs/default.yaml").read_text()
    return yaml.safe_load(text)


def _coerce(default: Any, value: Any, where: str) -> Any:
    """Numbers written as '3e-4' (YAML reads those as text) become numbers; a wrong type is an error."""
    if isinstance(default, bool) or default is None or isinstance(value, bool):
        return value
    if isinstance(default, (int, float)) and isinstance(value, str):
        try:
            return float(value) if isinstance(default, float) or any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    return value


def merge(base: dict, over: dict, where: str) -> dict:
    """``over`` laid onto a copy of ``base``; a key ``base`` lacks is a :class:`ConfigError` naming ``where``."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in out:
            raise ConfigError(f"{where}: unknown setting {k!r} (known: {', '.join(sorted(base))})")
        if isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = merge(out[k], v, f"{where}.{k}")
        else:
            out[k] = _coerce(out[k], v, f"{where}.{k}")
    return out


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


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    cfg = default_config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from None
        if not isinstance(user, dict):
            raise ConfigError(f"{p}: a config file must be a mapping of settings")
        cfg = merge(cfg, user, str(p))
    if overrides:
        cfg = merge(cfg, overrides, "command line")
    return cfg


def with_defaults(saved: dict) -> dict:
    """A saved run's config completed with today's defaults for settings added since (old runs stay loadable)."""

    def fill(base: dict, over: dict) -> dict:
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = fill(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
        return out

    return fill(default_config(), saved)


def save_config(cfg: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node

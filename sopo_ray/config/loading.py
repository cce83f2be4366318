"""Loading a Config: YAML (with `extends:` layering) and `--set a.b=value` overrides, with errors a user can act
on; the dict form stored in checkpoints, and the copies a run makes (absolute paths, overrides)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from sopo_ray.config.root import Config
from sopo_ray.errors import ConfigError


def _allowed_keys(model: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    for part in path:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        model = field.annotation
    return sorted(model.model_fields)


def _field_at(loc: tuple[str, ...]) -> tuple[tuple[str, ...], FieldInfo | None]:
    """The longest prefix of an error location that names config keys (pydantic appends union members such as
    `bool` to it), and the field it ends at (a value or a section; None for the root)."""
    model: type[BaseModel] | None = Config
    field = None
    for depth, part in enumerate(loc):
        found = model.model_fields.get(part) if model is not None else None
        if found is None:
            return loc[:depth], field
        field, annotation = found, found.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return loc, field


def _as_yaml(value: Any) -> str:
    """How a value is written after `--set key=` (YAML scalar: 300, 0.45, true, null, artifacts)."""
    value = str(value) if isinstance(value, Path) else value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(Config, loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        guess = f"did you mean '{'.'.join((*loc[:-1], close[0]))}'? " if close else "remove it; "
        return f"unknown config key '{'.'.join(loc)}' in {source}; {guess}allowed keys here: {', '.join(allowed)}"
    loc, field = _field_at(loc)
    key = ".".join(loc) or "<root>"
    same_key = [e for e in err.errors() if tuple(str(p) for p in e["loc"][:len(loc)]) == loc]
    msg = " or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in same_key))
    annotation = field.annotation if field is not None else Config
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if first["type"] == "value_error":
            where = f"config section '{key}'" if loc else "combination of config keys"
            return f"invalid {where} in {source}: {msg}; fix the keys it names"
        return (f"config key '{key}' in {source} is a section, not a value ({msg}); set its keys instead, "
                f"e.g. {key}.{next(iter(annotation.model_fields))}=...")
    fix = f"e.g. {key}={_as_yaml(field.get_default(call_default_factory=True))} (the default)"
    return f"bad value {first.get('input')!r} for config key '{key}' in {source}: {msg}; use {fix}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into (['a', 'b'], value), the value parsed as YAML (so 3, 0.5, true, null work)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. schedule.total_steps=100), got '{item}'")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set expects key=value with a non-empty key, got '{item}'")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def _merge(base: dict[str, Any], keys: list[str], value: Any) -> None:
    node = base
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{k}' is a value, not a section; cannot set '{'.'.join(keys)}'")
        node = child
    node[keys[-1]] = value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` with `top` laid over it, section by section (a value in `top` replaces the one in `base`)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def read_yaml_config(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a YAML config file, with `extends: other.yaml` (relative to the file) laid under it, so a
    variant states only what differs from the config it builds on."""
    if not path.is_file():
        what = f"config file {path}" if not chain else f"config file {path} (extended by {chain[-1]})"
        raise ConfigError(f"{what} not found; pass an existing YAML file, e.g. configs/default.yaml")
    if path.resolve() in {p.resolve() for p in chain}:
        raise ConfigError(f"config file {path} extends itself through {' -> '.join(map(str, chain))}; break the loop")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
    loaded = dict(loaded or {})
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded
    if not isinstance(parent, str):
        raise ConfigError(f"config file {path}: `extends` must name one YAML file, e.g. extends: default.yaml")
    return _deep_merge(read_yaml_config(path.parent / parent, (*chain, path)), loaded)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, an optional YAML file (and the files it extends) and `--set` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        raw = read_yaml_config(Path(path))
        source = str(path)
    for item in overrides or []:
        keys, value = parse_override(item)
        _merge(raw, keys, value)
    if overrides:
        source = f"{source} (with --set overrides)" if path is not None else "--set overrides"
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A JSON/YAML-safe dict of the config (paths as strings), as stored in checkpoints and run dirs."""
    return cfg.model_dump(mode="json")


MODEL_SECTIONS = ("data", "model", "diffusion")
"""The sections that define a generator: what rebuilding one from its checkpoint reads."""


def model_config(stored: dict[str, Any]) -> Config:
    """The config a generator checkpoint stored, as far as it defines the model (the top-level keys and
    MODEL_SECTIONS; the run's other sections at their defaults), so a model trained by a version whose training
    sections had other keys still loads. Raises pydantic's ValidationError."""
    return Config.model_validate({k: v for k, v in stored.items() if k in MODEL_SECTIONS or not isinstance(v, dict)})


def with_absolute_paths(cfg: Config) -> Config:
    """`cfg` with `workdir` and `data.root` made absolute: Ray actors and Train workers may start in another
    working directory."""
    paths = [f"workdir={Path(cfg.workdir).resolve()}", f"data.root={Path(cfg.data.root).resolve()}"]
    paths += [f"pretrained.{k}={Path(v).resolve()}" for k, v in cfg.pretrained if v is not None]
    if cfg.reward.checkpoint is not None:
        paths.append(f"reward.checkpoint={Path(cfg.reward.checkpoint).resolve()}")
    return with_overrides(cfg, paths)


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with `a.b=value` overrides applied and validated again."""
    raw = config_to_dict(cfg)
    for item in overrides:
        keys, value = parse_override(item)
        _merge(raw, keys, value)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, "overrides")) from None

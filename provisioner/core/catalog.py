"""The embedded model catalog, and --model resolution (catalog id, alias or local path)."""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from provisioner.core.models import ModelSpec, parse_config
from provisioner.errors import ConfigError, UnknownModelError

_DATA = "data/models"


@cache
def catalog_ids() -> tuple[str, ...]:
    """Model ids of the embedded configs, as '<org>/<name>'."""
    root = resources.files("provisioner").joinpath(_DATA)
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".json"))
    return tuple(n[: -len(".json")].replace("__", "/") for n in names)


@cache
def _aliases() -> dict[str, str]:
    """lower-case id and lower-case short name (after the org) -> id; ambiguous shorts dropped."""
    table: dict[str, str] = {}
    shorts: dict[str, list[str]] = {}
    for mid in catalog_ids():
        table[mid.lower()] = mid
        shorts.setdefault(mid.split("/", 1)[1].lower(), []).append(mid)
    for short, ids in shorts.items():
        if len(ids) == 1:
            table.setdefault(short, ids[0])
    return table


def _load_embedded(model_id: str) -> dict[str, Any]:
    name = model_id.replace("/", "__") + ".json"
    text = resources.files("provisioner").joinpath(_DATA, name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


#: No config.json comes near this (Llama 4's, vision tower included, is ~10 KB).
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def load_json_text(raw: bytes, where: str) -> Any:
    """Strict JSON from bytes: UTF-8 (a BOM is fine), no NaN/Infinity, bounded nesting.

    Every failure is a ConfigError naming `where`, never a traceback.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{where}: not UTF-8 text (byte {e.start}); JSON files must be UTF-8"
        ) from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except ValueError as e:  # NaN / Infinity
        m = re.search(r'"([^"\\]{1,80})"\s*:\s*\[?\s*(-?Infinity|NaN)\b', text)
        key = f" at '{m.group(1)}'" if m else ""
        raise ConfigError(f"{where}: not valid JSON ({e}{key}; use a finite number)") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid JSON (nested too deeply)") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: {path.stat().st_size / 2**20:.0f} MiB is not a config.json "
                f"(at most {MAX_CONFIG_BYTES // 2**20} MiB)"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    data = load_json_text(raw, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config.json must be a JSON object")
    return data


def is_local_model(arg: str) -> bool:
    """Whether --model names a local config.json or snapshot folder, not a catalog id."""
    key = arg.strip()
    return (
        key.endswith(".json") or key.startswith((".", "/", "~")) or Path(key).expanduser().is_dir()
    )


def resolve_model(arg: str) -> ModelSpec:
    """--model: a catalog id (any case), a short alias, a config.json or a snapshot folder."""
    key = arg.strip()
    if not key:
        raise UnknownModelError("--model is empty; try 'prov models list'")
    if is_local_model(key):
        return _from_path(Path(key).expanduser())
    mid = _aliases().get(key.lower())
    if mid is None:
        close = difflib.get_close_matches(key.lower(), list(_aliases()), n=6, cutoff=0.5)
        ids = list(dict.fromkeys(_aliases()[c] for c in close))[:3]
        hint = f"; did you mean {', '.join(ids)}?" if ids else ""
        raise UnknownModelError(
            f"unknown model {key!r}{hint} (see 'prov models list', or pass a path to a "
            "config.json or a Hugging Face snapshot folder)"
        )
    return parse_config(_load_embedded(mid), mid, source=f"embedded catalog ({mid})")


def _from_path(path: Path) -> ModelSpec:
    # After the parser's own checks, a net for what they let through (types of nested
    # objects, truncated safetensors headers): provisioner/core/config_check.py, snapshot_check.py
    from provisioner.core.config_check import check_config

    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise ConfigError(f"{path}: folder has no config.json")
        data = _read_json(cfg_path)
        spec = parse_config(data, path.name, source=str(cfg_path))
        check_config(data, str(cfg_path))
        from provisioner.core.checkpoint import apply_checkpoint_bytes  # local: only for folders
        from provisioner.core.snapshot_check import check_snapshot

        spec = apply_checkpoint_bytes(spec, path)
        check_snapshot(path)
        return spec
    if not path.is_file():
        raise UnknownModelError(f"{path}: no such file or folder")
    name = path.parent.name if path.name == "config.json" else path.stem
    data = _read_json(path)
    spec = parse_config(data, name or "local-model", source=str(path))
    check_config(data, str(path))
    return spec

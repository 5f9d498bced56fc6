"""Bridge configurations for tests: one bot served by the simulator (or any Parloa URL), one
channel, short retry and lease times, no idle timeout. As parsed TOML (``config_data``), as a
validated :class:`BridgeConfig` (``service_config``) or as a file (``write_config``) for a
command run as a user would."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.channels import validate_channel
from bridge.config import BridgeConfig, parse_config

# Retries and leases short enough for tests to see them; no idle timeout unless a test asks.
FAST_ENGINE: Mapping[str, Any] = {
    "retry_initial_seconds": 0.05,
    "retry_max_seconds": 0.5,
    "lease_seconds": 5,
    "idle_timeout_seconds": 0,
    "drain_timeout_seconds": 5,
}
BOT = "demo"
BOT_OPTIONS: Mapping[str, Any] = {"release_id": "rel", "api_token": "parloa-tok"}


def sqlite_url(directory: Path, name: str = "bridge.db") -> str:
    """A SQLite database file in ``directory`` (created by the first migration)."""
    return f"sqlite+aiosqlite:///{directory / name}"


def config_data(
    database_url: str,
    parloa_url: str,
    channel: Mapping[str, Any],
    *,
    http: Mapping[str, Any] | None = None,
    engine: Mapping[str, Any] | None = None,
    bot: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration as parsed TOML: ``channel`` (name, type, options) talks to the bot
    ``demo`` at ``parloa_url``; ``http``, ``engine`` and ``bot`` add to or override the
    defaults."""
    return {
        "database": {"url": database_url},
        "http": {"host": "127.0.0.1", "port": 0, **(http or {})},
        "engine": {**FAST_ENGINE, **(engine or {})},
        "bots": {BOT: {**BOT_OPTIONS, "base_url": parloa_url, **(bot or {})}},
        "channels": [{"bot": BOT, **channel}],
    }


def service_config(data: Mapping[str, Any]) -> BridgeConfig:
    """:func:`config_data` (or any parsed TOML), validated as the ``run`` command does."""
    return parse_config(data, {}, validate_channel)


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    """``data`` (parsed TOML, e.g. :func:`config_data`) written to ``path`` as TOML; a
    directory gets a ``bridge.toml`` in it."""
    if path.is_dir():
        path = path / "bridge.toml"
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def toml_text(data: Mapping[str, Any]) -> str:
    """Parsed TOML written back: tables, arrays of tables, and values (strings, numbers,
    booleans, lists, inline tables inside an array of tables)."""
    return "\n".join(_tables((), data)).lstrip("\n") + "\n"


def _tables(path: tuple[str, ...], table: Mapping[str, Any]) -> list[str]:
    plain = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    lines = [f"\n[{_dotted(path)}]"] if path and (plain or not table) else []
    lines += [f"{_key(k)} = {_value(v)}" for k, v in plain.items()]
    for key, value in table.items():
        if _is_table(value):
            lines += _tables((*path, key), value)
        elif _is_table_array(value):
            for item in value:
                lines.append(f"\n[[{_dotted((*path, key))}]]")
                lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return lines


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_table(v) for v in value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(_key(part) for part in path)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's too
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")

"""Logging to stderr, as text or JSON, with secrets redacted from every line.

Redaction happens on the formatted line (message, arguments and traceback together), because
libraries log things we do not control: httpx prints Telegram request URLs, which contain the
bot token."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

REDACTED = "***"

# Token shapes worth hiding even when not configured as secrets.
_TOKEN_PATTERNS = [
    re.compile(r"(?<=/bot)\d+:[A-Za-z0-9_-]{20,}"),  # Telegram bot token in a URL path
    re.compile(r"\b\d{6,}:[A-Za-z0-9_-]{30,}\b"),  # Telegram bot token anywhere
    # Slack refresh tokens (token rotation): xoxe-1-..., and rotating tokens xoxe.xoxp-1-...
    re.compile(r"\bxoxe(?:\.xox[a-z])?-[A-Za-z0-9-]{8,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"),  # Slack bot/user tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]{8,}"),  # Slack app-level tokens
    re.compile(r"(?i)(?<=bearer )[^\s\"',;]+"),  # Authorization headers
]


class Redactor:
    """Replaces known secret values and token-shaped strings in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Very short values would redact ordinary words; secrets are never that short.
        new = {s for s in secrets if s and len(s) >= 4}
        self._secrets = sorted(set(self._secrets) | new, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text


class RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor, fmt: str, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    def __init__(self, redactor: Redactor, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(
    level: str = "INFO",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> Redactor:
    """Install one stderr handler on the root logger; returns the redactor so more secrets
    (e.g. Slack installation tokens) can be added later."""
    redactor = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = RedactingJsonFormatter(
            redactor,
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
        )
    else:
        formatter = RedactingFormatter(redactor, TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO; those URLs carry the Telegram token. Keep it at
    # WARNING unless the operator asked for DEBUG (where the redactor still applies).
    if level != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING if level != "DEBUG" else level)
    # Alembic narrates every migration context at INFO; our own line says what changed.
    logging.getLogger("alembic").setLevel(logging.WARNING if level != "DEBUG" else level)
    return redactor


def add_secrets(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` from now on in every line of the handlers :func:`configure_logging`
    installed: for values learnt while running (a Slack workspace's tokens, issued at OAuth
    installation), which no configuration names."""
    values = [s for s in secrets if s]
    if not values:
        return
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, RedactingFormatter | RedactingJsonFormatter):
            formatter.redactor.add(values)

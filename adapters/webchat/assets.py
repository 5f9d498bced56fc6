"""The chat page and the embed script, built once per channel from the files in ``static/``
(package data, read with importlib.resources): no CDN, no build step, works offline.

The page carries its CSS and JavaScript inline, allowed by hash in its Content-Security-Policy,
so nothing but those two blocks can run or style it. Options reach the page as HTML-escaped
text and as a JSON data block, never as code."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def read_static(name: str) -> str:
    return (resources.files("adapters.webchat") / "static" / name).read_text(encoding="utf-8")


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _json_for_script(value: object) -> str:
    """JSON that cannot end its ``<script>`` element early."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True, slots=True)
class Page:
    html: bytes
    content_security_policy: str


def build_page(
    *,
    channel: str,
    title: str,
    placeholder: str,
    max_text_length: int,
    frame_ancestors: Sequence[str],
    uploads: bool = True,
) -> Page:
    """The chat page of one channel. ``frame_ancestors`` lists the origins that may embed it
    besides its own (``*`` for any); ``uploads``: whether it offers to attach files."""
    style = read_static("chat.css")
    script = read_static("chat.js")
    values: Mapping[str, str] = {
        "title": html.escape(title),
        "placeholder": html.escape(placeholder),
        "max_text_length": str(max_text_length),
        "config": _json_for_script(
            {"channel": channel, "maxTextLength": max_text_length, "uploads": uploads}
        ),
        "style": style,
        "script": script,
    }
    # One pass: a value containing "{{...}}" is not expanded again.
    text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], read_static("page.html"))
    ancestors = " ".join(["'self'", *frame_ancestors]) if "*" not in frame_ancestors else "*"
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_csp_hash(script)}",
            f"style-src {_csp_hash(style)}",
            # Card images and attachments come from wherever the bot designer put them; blob:
            # previews the user's own upload.
            "img-src https: http: data: blob:",
            "media-src https: http:",
            # The WebSocket and the upload route.
            "connect-src 'self'",
            f"frame-ancestors {ancestors}",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    return Page(text.encode("utf-8"), policy)


def embed_script() -> bytes:
    return read_static("embed.js").encode("utf-8")

"""The operator console: one page at ``/admin/`` and its script and style sheet, read from
``static/`` (package data): no CDN, no build step, works offline.

The page holds no secret and no data: it asks the operator for the admin token and reads
everything from the admin API (bridge/admin/api.py) with it, so it is served whether or not
the API is enabled (a disabled API answers 404 and the page says so). Its policy lets only
its own script and style sheet run or style it; the script sets data as text, never as HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from aiohttp import web

#: where the console is served
BASE_PATH = "/admin"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # The favicon is a data: URL; the charts are inline SVG. Card images of a transcript
        # are shown as links, not loaded: the console fetches nothing from elsewhere.
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # A new release's files are used at once; the token never sits in a cached response.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def read_static(name: str) -> bytes:
    return (resources.files("bridge.admin") / "static" / name).read_bytes()


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str

    async def serve(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.body, content_type=self.content_type, charset="utf-8", headers=_HEADERS
        )


async def _redirect(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(BASE_PATH + "/")


def console_routes() -> list[web.RouteDef]:
    """``GET /admin/`` (the page), ``/admin/console.js`` and ``/admin/console.css``; ``/admin``
    redirects to ``/admin/`` (the page's relative URLs resolve under it)."""
    page = _Asset(read_static("console.html"), "text/html")
    script = _Asset(read_static("console.js"), "text/javascript")
    style = _Asset(read_static("console.css"), "text/css")
    return [
        web.get(BASE_PATH, _redirect),
        web.get(BASE_PATH + "/", page.serve),
        web.get(BASE_PATH + "/console.js", script.serve),
        web.get(BASE_PATH + "/console.css", style.serve),
    ]

"""The console's page and assets as the bridge serves them: content types, a policy that lets
only the console's own script and style sheet run, nothing inline, nothing from elsewhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import aiohttp
from aiohttp import web

from bridge.admin.console import console_routes, read_static
from tests.support.net import serving


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside ``<script>`` and ``<style>``."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._inside = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside and data.strip():
            self.inline.append(data)


def parse_page() -> _Tags:
    tags = _Tags()
    tags.feed(read_static("console.html").decode("utf-8"))
    return tags


def app() -> web.Application:
    application = web.Application()
    application.add_routes(console_routes())
    return application


async def test_the_page_and_its_assets_are_served_with_a_strict_policy() -> None:
    async with serving(app()) as base, aiohttp.ClientSession() as http:
        for path, content_type, name in [
            ("/admin/", "text/html", "console.html"),
            ("/admin/console.js", "text/javascript", "console.js"),
            ("/admin/console.css", "text/css", "console.css"),
        ]:
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
                assert resp.content_type == content_type
                assert resp.charset == "utf-8"
                assert await resp.read() == read_static(name)
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["Cache-Control"] == "no-cache"
                assert resp.headers["Referrer-Policy"] == "no-referrer"
                policy = dict(
                    [*d.split(" ", 1), ""][:2]
                    for d in resp.headers["Content-Security-Policy"].split("; ")
                )
                assert policy["default-src"] == "'none'"
                assert policy["script-src"] == "'self'"
                assert policy["style-src"] == "'self'"
                assert policy["connect-src"] == "'self'"
                assert policy["frame-ancestors"] == "'none'"
                assert "unsafe" not in resp.headers["Content-Security-Policy"]
        # the page's relative URLs need the trailing slash
        async with http.get(base + "/admin", allow_redirects=False) as resp:
            assert resp.status == 308
            assert resp.headers["Location"] == "/admin/"
        async with http.get(base + "/admin/other.js") as resp:
            assert resp.status == 404


def test_the_page_has_nothing_inline_and_loads_only_its_own_files() -> None:
    page = parse_page()
    assert page.inline == []  # no inline script or style: the policy would refuse it
    for tag, attrs in page.tags:
        handlers = [name for name in attrs if name.startswith("on")]
        assert handlers == [], f"<{tag}> has inline event handlers {handlers}"
        assert "style" not in attrs, f"<{tag}> has an inline style"
    scripts = [a.get("src") for t, a in page.tags if t == "script"]
    sheets = [a.get("href") for t, a in page.tags if t == "link" and a.get("rel") == "stylesheet"]
    assert (scripts, sheets) == (["console.js"], ["console.css"])


def test_every_form_field_has_a_label() -> None:
    page = parse_page()
    labelled = {a.get("for") for t, a in page.tags if t == "label"}
    fields = [
        a["id"]
        for t, a in page.tags
        if t in ("input", "select", "textarea") and a.get("type") != "hidden"
    ]
    assert fields and all(f in labelled for f in fields)


def test_the_script_never_writes_html_nor_evaluates_code() -> None:
    script = read_static("console.js").decode("utf-8")
    for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert risky not in script
    assert not re.search(r"new Function\b", script)
    assert not re.search(r"setAttribute\(\s*\"(style|on\w+)\"", script)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", script)  # nothing from elsewhere

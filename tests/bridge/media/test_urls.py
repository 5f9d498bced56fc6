"""Signed media URLs: what a signature covers, what is refused and how."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.media.urls import Refused, Signer, check, new_media_id

KEY = b"a-media-signing-key-of-32-bytes!"


def parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path.rsplit("/", 1)[1], query["exp"][0], query["sig"][0]


def test_a_signed_url_checks_until_it_expires() -> None:
    signer = Signer(KEY, lambda: "https://bridge.example.com/", 600)
    url = signer.url("abc", now=1000)
    assert url.startswith("https://bridge.example.com/media/abc?exp=1600&sig=")
    media_id, exp, sig = parts(url)
    check(KEY, media_id, exp, sig, now=1600)  # the last second still works
    with pytest.raises(Refused) as expired:
        check(KEY, media_id, exp, sig, now=1601)
    assert expired.value.status == 404


@pytest.mark.parametrize(
    "tamper",
    [
        lambda i, e, s: ("abd", e, s),  # another file
        lambda i, e, s: (i, str(int(e) + 1), s),  # a later expiry
        lambda i, e, s: (i, e, s[:-1] + ("A" if s[-1] != "A" else "B")),  # the signature
        lambda i, e, s: (i, e, ""),
        lambda i, e, s: (i, None, s),
        lambda i, e, s: (i, "1e9", s),
        lambda i, e, s: (i, "²²²", s),  # digits, but not ASCII ones
        lambda i, e, s: (i, "9" * 40, s),
        lambda i, e, s: (i, e, "ü" * 22),
    ],
)
def test_anything_tampered_is_403(tamper: object) -> None:
    url = Signer(KEY, lambda: "http://b", 600).url("abc", now=1000)
    args = tamper(*parts(url))  # type: ignore[operator]
    with pytest.raises(Refused) as refused:
        check(KEY, *args, now=1000)
    assert refused.value.status == 403


def test_another_key_refuses() -> None:
    url = Signer(KEY, lambda: "http://b", 600).url("abc", now=1000)
    with pytest.raises(Refused):
        check(b"another-key-of-32-bytes-xxxxxxxx", *parts(url), now=1000)


def test_ids_are_short_and_unguessable() -> None:
    ids = {new_media_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


async def test_the_key_is_loaded_once_and_a_failure_is_not_kept() -> None:
    import asyncio

    from bridge.media.urls import KeyOnce

    loads: list[int] = []

    async def load() -> bytes:
        loads.append(1)
        if len(loads) == 1:
            raise ConnectionError("the database is down")
        await asyncio.sleep(0)
        return KEY

    key = KeyOnce(load)
    with pytest.raises(ConnectionError):
        await key()
    assert await asyncio.gather(key(), key(), key()) == [KEY, KEY, KEY]
    assert len(loads) == 2

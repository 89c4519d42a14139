"""Pure HTML rewriting for tracking: links → /c/<token>, one 1×1 pixel → /o/<token>.

Only absolute http(s) links of `<a href>` are rewritten; the unsubscribe link (its own signed URL, RFC 8058
requires it to work as given), mailto:/tel: links, anchors and links marked `data-envoi-notrack` are left alone.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable

_A_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_NOTRACK = re.compile(r"data-envoi-notrack", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def trackable_urls(doc: str, skip_prefixes: Iterable[str] = ()) -> list[str]:
    """The URLs a rewrite would replace, in order of appearance (HTML entities decoded)."""
    skip = tuple(skip_prefixes)
    out = []
    for m in _A_HREF.finditer(doc):
        url = _url(m, skip)
        if url is not None:
            out.append(url)
    return out


def _url(m: re.Match[str], skip: tuple[str, ...]) -> str | None:
    tag = m.group(1)
    if "notrack" in tag.lower() and _NOTRACK.search(tag):
        return None
    raw = m.group(3)
    url = (html.unescape(raw) if "&" in raw else raw).strip()
    if not url.lower().startswith(("http://", "https://")) or (skip and url.startswith(skip)):
        return None
    return url


def rewrite_links(doc: str, replacement: Callable[[str], str | None], skip_prefixes: Iterable[str] = ()) -> str:
    skip = tuple(skip_prefixes)

    def sub(m: re.Match[str]) -> str:
        url = _url(m, skip)
        new = replacement(url) if url is not None else None
        if new is None:
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}{html.escape(new, quote=True)}{m.group(2)}"

    return _A_HREF.sub(sub, doc)


def insert_pixel(doc: str, pixel_url: str) -> str:
    tag = (f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
           'style="display:block;border:0;width:1px;height:1px" />')
    ends = list(_BODY_END.finditer(doc))
    if not ends:
        return doc + tag
    at = ends[-1].start()  # the last </body>: a quoted "</body>" inside the document stays untouched
    return doc[:at] + tag + doc[at:]

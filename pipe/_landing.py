# -*- test-case-name: tests.test_landing -*-
"""
C{/} and C{/version}: what this server is, for people and for scripts.

C{GET /} answers a small self-contained HTML page (inline style, no script,
no external asset) to a client whose C{Accept} names C{text/html}, and the
same content as plain text to everyone else (curl sends C{*/*}).  The
copy-paste commands carry this server's base URL, built from the request's
C{Host} header: a value that is not a plain host name or address (with an
optional port) is replaced by C{HOST}, and the HTML escapes what it shows.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, List, Tuple

from twisted.web.resource import Resource

from pipe import __version__
from pipe._transfer.registry import Registry

if TYPE_CHECKING:
    from pipe._http.request import StreamingRequest

__all__ = ["Landing", "Version", "base_url"]

_HOST = re.compile(
    rb"(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
_HTML_TYPE = re.compile(rb"(?:^|,)\s*text/html\s*(?:;|,|$)", re.IGNORECASE)

#: Nothing on the page may load or run anything: inline style only.
PAGE_POLICY = (
    b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none';"
    b" form-action 'none'; frame-ancestors 'none'"
)

_STYLE = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
       max-width: 46rem; margin: 3rem auto; padding: 0 1.25rem; color: #1d2330;
       background: #fbfbfd; }
h1 { font-size: 1.9rem; margin: 0 0 .2rem; letter-spacing: -.01em; }
h1 small { font-size: .95rem; color: #6b7280; font-weight: normal; margin-left: .4rem; }
h2 { font-size: 1.1rem; margin: 2rem 0 .4rem; }
p { margin: .4rem 0; }
.lead { color: #394150; margin-bottom: 1.5rem; }
pre { background: #111827; color: #e5e7eb; padding: .8rem 1rem; border-radius: .5rem;
      overflow-x: auto; font: 14px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .92em;
       background: #eef0f4; padding: .05rem .3rem; border-radius: .25rem; }
pre code { background: none; padding: 0; font-size: inherit; }
.note { border-left: 3px solid #6366f1; padding: .2rem .9rem; background: #eef2ff; }
footer { margin-top: 2.5rem; color: #6b7280; font-size: .9rem; }
footer a { color: inherit; }
"""


def base_url(request: StreamingRequest) -> str:
    """
    The server's base URL as the client addressed it: scheme from the
    connection, host from the C{Host} header when it is a plain host name
    or address with an optional port, else C{HOST}.
    """
    scheme = "https" if request.isSecure() else "http"
    host = request.getHeader(b"host") or b""
    raw = host.encode("latin-1", "replace") if isinstance(host, str) else host
    shown = raw.decode("ascii") if _HOST.fullmatch(raw) else "HOST"
    return f"{scheme}://{shown}"


def _sections(base: str, signed: bool) -> List[Tuple[str, List[str]]]:
    """
    The page's content as (heading, lines) pairs; lines starting with C{$ }
    are commands.
    """
    url = f"{base}/api/v1/pipe/my-build/artifact.tar?n=3"
    sections: List[Tuple[str, List[str]]] = [
        (
            "Send",
            [
                "Stream a file (or any command's output) to n receivers:",
                f'$ curl -fsS -T artifact.tar "{url}"',
                f'$ tar c . | curl -fsS -T - "{url}"',
            ],
        ),
        (
            "Receive",
            [
                "Each of the n receivers runs (with set -o pipefail for the"
                " second, so that a failed transfer fails the step):",
                f'$ curl -fsS -o artifact.tar "{url}"',
                f'$ curl -fsS "{url}" | tar x',
            ],
        ),
        (
            "How it works",
            [
                "The sender and the n receivers may arrive in any order. The bytes"
                " pass through the server once, at the pace of the slowest"
                " receiver, and nothing is stored. The sender sees progress and"
                " ends with a summary; curl -f fails if any receiver did not get"
                " every byte.",
                "Use a path nobody can guess: without signed URLs, the path is"
                " the only credential.",
            ],
        ),
    ]
    if signed:
        sign = "$ txpipe sign --secret-file KEY --ttl 600"
        sections.insert(
            0,
            (
                "Signed URLs required",
                [
                    "This server takes only signed, single-use URLs. Whoever holds"
                    " the key signs one URL to send and one to receive:",
                    f'{sign} --scope send "{url}"',
                    f'{sign} --scope receive "{url}"',
                ],
            ),
        )
    return sections


#: The server's other pages, listed at the foot of both versions.
_LINKS = (("Health", "/healthz"), ("Status", "/api/v1/status"), ("Version", "/version"))


def render_text(base: str, signed: bool) -> bytes:
    """
    The plain-text page.
    """
    out = [f"txpipe {__version__}: fan one upload out to N receivers", ""]
    for heading, lines in _sections(base, signed):
        out.append(f"{heading}:")
        out.extend(f"  {line}" for line in lines)
        out.append("")
    out.append("  ".join(f"{name}: {base}{path}" for name, path in _LINKS))
    return ("\n".join(out) + "\n").encode("ascii", "replace")


def render_html(base: str, signed: bool) -> bytes:
    """
    The HTML page: self-contained, no script.
    """
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>txpipe {html.escape(__version__)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>txpipe<small>{html.escape(__version__)}</small></h1>",
        '<p class="lead">Fan one HTTP upload out to N receivers: a build streams'
        " its artifact once, every runner pulls the same URL.</p>",
    ]
    for heading, lines in _sections(base, signed):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        commands = [line[2:] for line in lines if line.startswith("$ ")]
        for line in lines:
            if not line.startswith("$ "):
                css = ' class="note"' if heading.startswith("Signed") else ""
                parts.append(f"<p{css}>{html.escape(line)}</p>")
        if commands:
            shown = "\n".join(html.escape(command) for command in commands)
            parts.append(f"<pre><code>{shown}</code></pre>")
    links = " &middot; ".join(
        f'{name}: <a href="{html.escape(base + path)}">'
        f"<code>{html.escape(base + path)}</code></a>"
        for name, path in _LINKS
    )
    parts.append(f"<footer>{links}</footer>")
    parts.append("</body></html>\n")
    return "\n".join(parts).encode("utf-8")


def wants_html(request: StreamingRequest) -> bool:
    """
    Whether the request's C{Accept} names C{text/html}.
    """
    accept = request.getHeader(b"accept")
    if accept is None:
        return False
    raw = accept.encode("latin-1", "replace") if isinstance(accept, str) else accept
    return bool(_HTML_TYPE.search(raw))


class Landing(Resource):
    """
    C{GET /}: the page (see the module docstring).  Under a mount
    (C{/ci/}), every URL it shows is under the mount too.
    """

    isLeaf = True

    def __init__(self, registry: Registry, mount: bytes = b"") -> None:
        """
        @param registry: the server-wide state (is signing on?).
        @param mount: the raw URL path of the pipe tree (C{b""} at the
            site's root, C{b"/ci"} under a prefix).
        """
        super().__init__()
        self._registry = registry
        self._mount = mount.decode("ascii")

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        base = base_url(request) + self._mount
        signed = self._registry.guard is not None
        request.setHeader(b"vary", b"Accept, Host")
        if wants_html(request):
            body = render_html(base, signed)
            response = request.plain_response(200, body)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"content-security-policy", PAGE_POLICY)
        else:
            response = request.plain_response(200, render_text(base, signed))
        request.setHeader(b"cache-control", b"no-cache")
        return b"" if request.method == b"HEAD" else response


class Version(Resource):
    """
    C{GET /version}: the version, one line of plain text.
    """

    isLeaf = True

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        return request.plain_response(200, f"{__version__}\n".encode("ascii"))

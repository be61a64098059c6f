# -*- test-case-name: tests.test_oidc_end_to_end -*-
"""
Where a CI job's OIDC ID token comes from, for C{txpipe send/recv
--id-token SOURCE} and L{pipe.client}'s C{id_token}:

  - C{github:AUDIENCE}: asked of GitHub Actions for C{AUDIENCE} (the job
    needs C{permissions: id-token: write}): C{GET
    $ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUDIENCE} with C{Authorization:
    bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN}, whose JSON C{value} is the token;
  - C{env:NAME}: the environment variable C{NAME} (GitLab CI's C{id_tokens},
    Buildkite, CircleCI's C{CIRCLE_OIDC_TOKEN_V2});
  - C{file:PATH}: the contents of the file C{PATH}.

The token goes in an C{Authorization: Bearer} header, never in a URL, and
is never printed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional
from urllib.parse import quote

import attr

__all__ = ["IdTokenError", "IdTokenSource", "id_token", "parse_source"]

_KINDS = ("github", "env", "file")


class IdTokenError(ValueError):
    """
    The ID token cannot be had: C{str()} says why, in one line.
    """


@attr.s(auto_attribs=True, frozen=True)
class IdTokenSource:
    """
    Where a token comes from.

    @ivar kind: C{github}, C{env} or C{file}.
    @ivar value: the audience, the variable's name or the file's path.
    """

    kind: str
    value: str


def parse_source(text: str) -> IdTokenSource:
    """
    A C{--id-token} argument as an L{IdTokenSource}.

    @raise IdTokenError: it is not C{github:AUDIENCE}, C{env:NAME} or
        C{file:PATH}.
    """
    kind, colon, value = text.partition(":")
    if not colon or kind not in _KINDS or not value:
        raise IdTokenError(
            f"--id-token must be github:AUDIENCE, env:NAME or file:PATH, got {text!r}"
        )
    return IdTokenSource(kind, value)


async def id_token(
    source: IdTokenSource,
    reactor: Any,
    environ: Optional[Mapping[str, str]] = None,
) -> str:
    """
    The token C{source} gives.

    @param environ: the environment (default: the process's).
    @raise IdTokenError: it cannot be had.
    """
    environ = os.environ if environ is None else environ
    if source.kind == "env":
        token = environ.get(source.value, "").strip()
        if not token:
            raise IdTokenError(f"--id-token: ${source.value} is not set or empty")
        return token
    if source.kind == "file":
        try:
            with open(source.value, encoding="ascii") as file:
                token = file.read(65536).strip()
        except (OSError, UnicodeDecodeError) as error:
            why = getattr(error, "strerror", None) or str(error)
            raise IdTokenError(
                f"--id-token: cannot read {source.value}: {why}"
            ) from None
        if not token:
            raise IdTokenError(f"--id-token: {source.value} is empty")
        return token
    return await _from_github(source.value, reactor, environ)


async def _from_github(audience: str, reactor: Any, environ: Mapping[str, str]) -> str:
    import treq
    from twisted.web.http_headers import Headers

    url = environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    request_token = environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not request_token:
        raise IdTokenError(
            "--id-token github:...: ACTIONS_ID_TOKEN_REQUEST_URL and "
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set (does the job have "
            "permissions: id-token: write?)"
        )
    separator = "&" if "?" in url else "?"
    try:
        response = await treq.get(
            url + separator + "audience=" + quote(audience, safe=""),
            headers=Headers({"Authorization": [f"bearer {request_token}"]}),
            reactor=reactor,
            persistent=False,
            timeout=30,
        )
        body = await treq.content(response)
    except Exception as error:
        raise IdTokenError(
            f"--id-token github:...: the token request failed: {error}"
        ) from None
    if response.code != 200:
        raise IdTokenError(
            f"--id-token github:...: the token request answered {response.code}"
        )
    try:
        token = json.loads(body)["value"]
    except (ValueError, KeyError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        raise IdTokenError("--id-token github:...: the answer has no token value")
    return token

# -*- test-case-name: tests.test_container_entry -*-
"""
The container image's C{HEALTHCHECK}: C{GET /healthz} on the server in the
same container, with nothing but the standard library (a slim image has no
curl), so that it costs a fraction of a second and a few megabytes.

Exit status 0 when the answer is C{200 ok}, 1 otherwise (C{503 draining},
refused, timed out), as Docker's C{HEALTHCHECK} wants.  The URL is
C{http://127.0.0.1:8080/healthz}, or C{$TXPIPE_HEALTHCHECK_URL} for a
server started with another C{--listen}.

Run as C{python -m pipe._deploy.healthcheck}.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from typing import Mapping, Optional

__all__ = ["DEFAULT_URL", "main"]

DEFAULT_URL = "http://127.0.0.1:8080/healthz"
TIMEOUT = 5.0


def main(environ: Optional[Mapping[str, str]] = None) -> int:
    """
    Ask the server's C{/healthz}; print its answer; return the exit status.
    """
    environ = os.environ if environ is None else environ
    url = environ.get("TXPIPE_HEALTHCHECK_URL") or DEFAULT_URL
    # The server is local: never through an HTTP_PROXY the container may have.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT) as response:
            body = response.read(100).decode("utf-8", "replace").strip()
            print(f"{response.status} {body}")
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"{error.code} {error.read(100).decode('utf-8', 'replace').strip()}")
    except (OSError, ValueError) as error:
        print(f"{url}: {error}")
    return 1


if __name__ == "__main__":
    sys.exit(main())

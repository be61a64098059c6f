# -*- test-case-name: tests.test_resource -*-
"""
The one type of a refused request.

Whatever refuses a request (its URL or headers, the signature guard, the
server's limits or drain; the rendezvous of its path through the resource,
L{pipe.resource.refusal_for}) raises a L{Refusal} that carries everything
its response needs: the status, the one-line
C{[ERROR]} body, extra headers, and the reason's name (its slug: a metric
label and the name of the message in L{pipe._transfer.messages}).  The pipe resource
answers every one the same way.  A refusal knows no transport: it is the
answer, not the sending of it.
"""

from __future__ import annotations

from typing import Dict, Optional

__all__ = ["REASONS", "RETRY_AFTER", "Refusal"]

#: Every reason's slug: the metrics export each from the start (at 0), so
#: that C{rate()} and C{increase()} see a reason's first refusal.
REASONS = (
    "bad_n",
    "bad_wait",
    "bad_sender_response",
    "bad_min",
    "bad_name",
    "path_empty",
    "path_too_long",
    "path_control",
    "not_found",
    "method_not_allowed",
    "count_mismatch",
    "sender_taken",
    "receivers_full",
    "transfer_running",
    "min_mismatch",
    "quorum_started",
    "path_closed",
    "shutting_down",
    "too_many_pipes",
    "too_many_connections",
    "signature_required",
    "signature_malformed",
    "signature_mismatch",
    "signature_scope",
    "signature_expired",
    "signature_lifetime",
    "signature_used",
    # OIDC tokens (pipe._oidc.tokens.Problem).
    "token_required",
    "token_malformed",
    "token_issuer",
    "token_algorithm",
    "token_key",
    "token_signature",
    "token_audience",
    "token_expired",
    "token_not_yet_valid",
    "token_claims",
    "token_forbidden",
    "token_used",
    "token_keys_unavailable",
)

#: The C{Retry-After} of a 503 (seconds), when the server is full or
#: shutting down.
RETRY_AFTER = b"5"


class Refusal(Exception):
    """
    A request that gets an error response.

    @ivar code: the HTTP status.
    @ivar body: the one-line C{[ERROR]} body.
    @ivar reason: the slug, C{bad_n}: a metric label, and the name of the
        message in L{pipe._transfer.messages}.
    @ivar headers: extra response headers (C{Allow}, C{Retry-After},
        C{WWW-Authenticate}).
    """

    def __init__(
        self,
        code: int,
        body: bytes,
        reason: str,
        headers: Optional[Dict[bytes, bytes]] = None,
    ) -> None:
        super().__init__(code, body)
        self.code = code
        self.body = body
        self.reason = reason
        self.headers = headers or {}

    @classmethod
    def unavailable(cls, body: bytes, reason: str) -> Refusal:
        """
        A 503: the server is shutting down or full; try again shortly.
        """
        return cls(503, body, reason, {b"retry-after": RETRY_AFTER})

"""
Tests for L{pipe._compat.header_values}: header values refused as Twisted
26.10 refuses them, on the releases before it (tests/test_strict.py sends
the hostile headers to a real server on every Twisted of the matrix).
"""

from __future__ import annotations

from typing import Any

import pytest

from pipe._compat import header_values
from pipe._compat.header_values import (
    LAX_HEADER_VALUES,
    StrictHeaderValues,
    valid_header_line,
    valid_transfer_encoding,
)
from pipe._compat.supported import twisted_version
from pipe._http.channel import StreamingChannel


def test_header_value_checks() -> None:
    assert valid_header_line(b"X-Foo: a b\tc\x0b")
    assert not valid_header_line(b"X-Foo: a\x00")
    assert not valid_header_line(b"X-Foo: a\rb")
    assert not valid_header_line(b"X-Foo: a\nb")
    assert valid_transfer_encoding(b" \tChunked\t ")
    assert valid_transfer_encoding(b"identity")
    assert not valid_transfer_encoding(b"chunked\x0b")
    assert not valid_transfer_encoding(b"gzip, chunked")


def test_applied_exactly_where_twisted_takes_such_values() -> None:
    """
    The channel has L{StrictHeaderValues} in front exactly where the
    installed Twisted takes a NUL, CR or LF in a value: every release before
    26.10.0 (a distribution's backport may make one strict earlier).
    """
    assert (StrictHeaderValues in StreamingChannel.__mro__) == LAX_HEADER_VALUES
    if twisted_version() < (26, 10, 0):
        assert LAX_HEADER_VALUES
    if twisted_version() >= (26, 10, 0):
        assert not LAX_HEADER_VALUES


def test_the_probe_writes_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe keeps its request's body in memory (see test_legacy)."""
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a probe made a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    header_values._refused(b"\x00")

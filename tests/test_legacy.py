"""
Tests for L{pipe._compat.legacy}, what txpipe does only for Twisted older
than 24.7.0: its checks, what it finds the installed Twisted lacks, and
that it is applied only where it adds something.  (Raising Twisted's floor
to 24.7.0 deletes that folder and this file.)
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import StringTransport
from twisted.web import http
from twisted.web.http import _MalformedChunkedDataError

from pipe._compat import legacy
from pipe._compat.legacy import detect
from pipe._compat.legacy.chunks import check_chunk_size
from pipe._compat.legacy.parsing import (
    StrictParsing,
    valid_header_name,
    valid_request_line,
)
from pipe._compat.supported import twisted_version
from pipe._http.channel import StreamingChannel
from pipe._http.chunked import ChunkedDecoder


@pytest.mark.parametrize(
    "line",
    [
        b"GET  /x HTTP/1.1",
        b"GET\t/x HTTP/1.1",
        b"GET /x HTTP/1.2",
        b"G(T /x HTTP/1.1",
        b"GET /x\x00 HTTP/1.1",
        b"GET /x HTTP/1.1 ",
    ],
)
def test_malformed_request_lines_are_refused(line: bytes) -> None:
    assert not valid_request_line(line)


def test_well_formed_lines_and_names_pass() -> None:
    """
    The checks take what clients send.
    """
    for line in (
        b"GET /api/v1/pipe/a%20b?n=2&x=~ HTTP/1.1",
        b"PUT / HTTP/1.0",
        b"OPTIONS * HTTP/1.1",
        b"M-SEARCH /x HTTP/1.1",
    ):
        assert valid_request_line(line), line
    for name in (b"Content-Length", b"X-Piping", b"x_a", b"A1!#$%'*+-.^_`|~"):
        assert valid_header_name(name), name


@pytest.mark.parametrize(
    "line", [b"-5", b"+5", b"0x5", b"5 ", b"", b"5;a=\x00", b"5;\x01", b"5;a=\x7f"]
)
def test_chunk_size_lines_are_checked(line: bytes) -> None:
    """
    What Twisted 22.4.0's chunked decoder refuses, the check refuses (and
    the decoder uses it where Twisted itself is older).
    """
    with pytest.raises(_MalformedChunkedDataError):
        check_chunk_size(line)


def test_chunk_size_lines_that_pass() -> None:
    for line in (b"5", b"aBc", b"0", b"5;name=value", b'5;a="b c"\t', b"5;\x80\xff"):
        check_chunk_size(line)


def test_what_is_found_lacking_matches_the_release() -> None:
    """
    The probes find every fix lacking before the release that made it and
    present from it on (a distribution's backport may make a fix present
    earlier, never absent later).
    """
    version = twisted_version()
    if version >= (24, 7, 0):
        assert not legacy.patched and not detect.LAX_CHUNK_SIZE
    if version < (22, 4, 0):
        assert detect.LAX_CONTENT_LENGTH and detect.LAX_CHUNK_SIZE
    if version < (23, 10, 0):
        assert detect.EAGER_PIPELINING or not detect.LAX_CHUNK_SIZE
    if version < (24, 7, 0):
        assert detect.PAIRS_TO_WRITE_HEADERS


def test_applied_only_where_it_adds_something() -> None:
    """
    The channel has L{StrictParsing} in front exactly where the installed
    Twisted lacks a fix, and then only the methods for what it lacks; the
    chunked decoder has the chunk-size check exactly where it parses laxly.
    """
    assert (StrictParsing in StreamingChannel.__mro__) == legacy.patched
    assert StreamingChannel.__name__ == "StreamingChannel"
    defined = set(vars(StrictParsing))
    assert ("lineReceived" in defined) == detect.LAX_REQUEST_LINE
    assert ("allContentReceived" in defined) == detect.EAGER_PIPELINING
    assert ("_finishRequestBody" in defined) == detect.LATE_PIPELINE_BUFFER
    assert ("writeHeaders" in defined) == detect.PAIRS_TO_WRITE_HEADERS
    assert ("_dataReceived_CHUNK_LENGTH" in vars(ChunkedDecoder)) == (
        detect.LAX_CHUNK_SIZE
    )


def test_pairs_reach_the_write_path_as_headers() -> None:
    """
    Where Twisted hands C{writeHeaders} pairs, the channel's write path
    gets L{Headers} all the same (sanitized).
    """
    seen: Any = []

    class Channel(StrictParsing, http.HTTPChannel):
        pass

    class Below(http.HTTPChannel):
        def writeHeaders(self, *args: Any) -> None:
            seen.append(args[3])

    class Probe(Channel, Below):
        timeOut = None

    if "writeHeaders" not in vars(StrictParsing):
        pytest.skip("this Twisted hands Headers already")
    channel = Probe()
    channel.makeConnection(StringTransport())
    channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", [(b"X-A", b"b")])
    assert list(seen[0].getAllRawHeaders()) == [(b"X-A", [b"b"])]


def test_header_pairs_are_written_with_the_fixed_headers() -> None:
    """
    Where Twisted's C{Request.write} hands over pairs, they are sanitized as
    Twisted does, and the fixed headers a streamed response set still follow.
    """
    if "writeHeaders" not in vars(StrictParsing):
        pytest.skip("this Twisted hands Headers already")
    from twisted.internet.task import Clock

    from pipe.server import make_site

    channel = make_site(Clock()).buildProtocol(None)  # type: ignore[arg-type]
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.add_to_head(b"X-Fixed: yes\r\n")
    channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", [(b"x-a", b"1\r\nX-B: 2")])
    assert transport.value() == (
        b"HTTP/1.1 200 OK\r\nX-A: 1 X-B: 2\r\nX-Fixed: yes\r\n\r\n"
    )
    transport.clear()
    channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", [])
    assert transport.value() == b"HTTP/1.1 200 OK\r\n\r\n", "written once"


def test_the_probes_write_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A probe's chunked body stays in memory: the image's read-only root has
    no temporary directory, and txpipe is imported there.
    """
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a probe made a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    body = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    assert not detect._refused(body)

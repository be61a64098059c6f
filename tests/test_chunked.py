"""
Tests for L{pipe._http.chunked}: the fast chunked decoder against Twisted's own,
differentially, on generated streams cut into generated reads (valid and
damaged), and the copies it saves.
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Type

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http import _ChunkedTransferDecoder, _MalformedChunkedDataError

from pipe._compat.patches import decoder_for_installed_twisted
from pipe._http.chunked import ChunkedDecoder


@decoder_for_installed_twisted
class TwistedRules(_ChunkedTransferDecoder):  # type: ignore[misc]
    """
    Twisted's own decoder, held to the chunk-size rules of Twisted 22.4.0
    where the installed Twisted is older (on a newer one: Twisted's decoder
    unchanged): the reference the fast decoder must match.
    """


def run(
    decoder_class: Type[_ChunkedTransferDecoder], reads: List[bytes]
) -> Tuple[bytes, Optional[bytes], Optional[str]]:
    """
    Feed C{reads} to a decoder: the data it delivered, what it handed on
    after the last chunk (L{None}: not finished), and the error it raised.
    """
    got = bytearray()
    finished: List[bytes] = []
    decoder = decoder_class(got.extend, finished.append)
    error = None
    try:
        for read in reads:
            decoder.dataReceived(read)
    except _MalformedChunkedDataError as e:
        error = type(e).__name__
    except RuntimeError as e:  # data after the end
        error = type(e).__name__
    return bytes(got), (finished[0] if finished else None), error


@st.composite
def streams(draw: st.DrawFn) -> List[bytes]:
    """
    A chunked body (chunk sizes, optional extensions and trailers, then
    maybe some bytes after the end), sometimes damaged, cut into reads.
    """
    chunks = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=6))
    parts = []
    for chunk in chunks:
        ext = draw(st.sampled_from([b"", b";a=b", b";x"]))
        size = b"%x" % len(chunk)
        if draw(st.booleans()):
            size = size.upper()
        parts.append(size + ext + b"\r\n" + chunk + b"\r\n")
    trailer = draw(st.sampled_from([b"", b"X-T: 1\r\n"]))
    parts.append(b"0\r\n" + trailer + b"\r\n" + draw(st.sampled_from([b"", b"GET"])))
    stream = b"".join(parts)
    if draw(st.integers(0, 3)) == 0 and stream:
        # Damage one byte: the decoders must agree on what that does.
        at = draw(st.integers(0, len(stream) - 1))
        stream = (
            stream[:at] + draw(st.binary(min_size=1, max_size=1)) + stream[at + 1 :]
        )
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reads, last = [], 0
    for cut in [*cuts, len(stream)]:
        reads.append(stream[last:cut])
        last = cut
    return [r for r in reads if r]


@settings(max_examples=600, deadline=None)
@given(streams())
def test_decodes_exactly_as_twisted_does(reads: List[bytes]) -> None:
    """
    Same data, same end, same refusals as Twisted's decoder, however the
    stream is cut into reads and wherever it is damaged.
    """
    assert run(ChunkedDecoder, reads) == run(TwistedRules, reads)


def test_long_chunk_size_lines_and_trailers_are_refused_like_twisted() -> None:
    for reads in (
        [b"1" * 2000 + b"\r\n"],
        [b"1" * 1000, b"1" * 1000 + b"\r\n"],
        [b"5;\x00\r\nhello\r\n0\r\n\r\n"],
        [b"5\r\nhelloXY0\r\n\r\n"],
        [b"-5\r\nhello\r\n"],
        [b"0x5\r\nhello\r\n"],
        [b"0\r\n" + b"X: y\r\n" * 20000 + b"\r\n"],
    ):
        ours, theirs = run(ChunkedDecoder, reads), run(TwistedRules, reads)
        assert ours == theirs
        assert ours[2] is not None, reads[0][:40]


def test_chunk_data_is_not_copied() -> None:
    """
    A read that holds whole chunks is handed on as slices of itself, and a
    read that is all chunk data as the read itself: no copy of the body.
    """
    got: List[object] = []
    decoder = ChunkedDecoder(got.append, lambda rest: None)
    read = b"5\r\nhello\r\n3\r\nabc\r\n4\r\nwxyz"
    decoder.dataReceived(read)
    assert [bytes(p) for p in got] == [b"hello", b"abc", b"wxyz"]  # type: ignore[call-overload]
    assert all(isinstance(p, memoryview) and p.obj is read for p in got)
    body = b"y" * 100
    decoder.dataReceived(b"\r\n64\r\n")
    decoder.dataReceived(body)
    assert got[-1] is body

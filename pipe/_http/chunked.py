# -*- test-case-name: tests.test_chunked -*-
"""
The chunked request-body decoder, with Twisted's rules and fewer copies.

Twisted's L{twisted.web.http._ChunkedTransferDecoder} appends every read to
a buffer, copies each chunk out of it and moves the rest of the buffer down
after each chunk: for a 256 KiB read of four 64 KiB chunks (what curl sends
for C{-T -}), about four copies of every byte.  L{ChunkedDecoder} keeps
Twisted's states, limits and error checks, and only changes where a chunk's
data comes from: when nothing is buffered, chunk data is handed on as a
C{memoryview} slice of the read itself, and the chunk-size lines and CRLFs
between chunks are parsed in place.  Whatever Twisted would buffer (a
chunk-size line, a CRLF or a trailer split across reads) is still handed to
Twisted's own code, so malformed input is refused exactly as before.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

from pipe._compat import internals as compat
from pipe._compat.patches import decoder_for_installed_twisted

__all__ = ["ChunkedDecoder", "Pieces"]

Data = Union[bytes, memoryview]


class Pieces:
    """
    The body pieces of one read (several chunks of a chunked body), handed
    on together without being joined: joining copies every byte of a
    chunked upload once more, into a fresh allocation per read.

    A consumer sees the upload's bytes in order in L{buffers}, each
    C{bytes}-like (C{memoryview} slices of the read); C{len()} is their
    total size, and C{bytes()} joins them (a copy) for code that needs one
    string.  L{pipe._http.request.StreamingRequest.write} writes them as one
    chunk of its response, scatter/gather.
    """

    __slots__ = ("buffers", "size")

    def __init__(self, buffers: Sequence[Data]) -> None:
        self.buffers = buffers
        self.size = sum(map(len, buffers))

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.buffers)


@decoder_for_installed_twisted
class ChunkedDecoder(compat.ChunkedTransferDecoder):  # type: ignore[misc]
    """
    Twisted's chunked decoder (L{pipe._compat.internals.ChunkedTransferDecoder}),
    reading chunk data straight out of each read (see the module
    docstring).  The data callback may get
    C{memoryview}s of the read; they stay valid (the read is immutable).
    On a Twisted older than 22.4.0 it refuses the chunk-size lines that
    22.4.0 refuses (see L{pipe._compat.patches}).
    """

    def __init__(
        self,
        dataCallback: Callable[[bytes], None],
        finishCallback: Callable[[bytes], None],
    ) -> None:
        super().__init__(dataCallback, finishCallback)

    def dataReceived(self, data: bytes) -> None:
        """
        Decode C{data}: chunk bodies and well-formed boundaries in place,
        anything that needs a buffer through Twisted's own decoder.
        """
        view = memoryview(data)
        end = len(data)
        at = 0
        while at < end and not compat.chunked_buffered(self):
            state = self.state
            if state == "BODY":
                take = min(self.length, end - at)
                self.length -= take
                if not self.length:
                    self.state = "CRLF"
                piece: Data = data if take == end else view[at : at + take]
                at += take
                # A memoryview is bytes-like: joined, written or sent as is.
                self.dataCallback(piece)  # type: ignore[arg-type]
            elif state == "CRLF" and end - at >= 2:
                if data[at : at + 2] != b"\r\n":
                    break  # Twisted's decoder refuses it, below
                at += 2
                self.state = "CHUNK_LENGTH"
            elif state == "CHUNK_LENGTH":
                eol = data.find(b"\r\n", at, end)
                if eol == -1:
                    break  # a line across reads: Twisted's decoder buffers it
                # Twisted's own parsing and checks, on this line alone.
                compat.chunk_length_line(self, view[at : eol + 2])
                at = eol + 2
            else:
                break
        if at < end:
            super().dataReceived(bytes(view[at:]))

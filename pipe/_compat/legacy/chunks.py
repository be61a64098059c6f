# -*- test-case-name: tests.test_strict -*-
"""
Chunk-size lines refused as Twisted 22.4.0 refuses them, for older
releases (CVE-2022-24801).
"""

from __future__ import annotations

from typing import Any

from twisted.web import http

__all__ = ["check_chunk_size", "strict_chunk_sizes"]

_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Twisted's C{_chunkExtChars}: tab, and every byte from space up but DEL.
_CONTROL = bytes(c for c in range(256) if (c < 0x20 and c != 0x09) or c == 0x7F)


def check_chunk_size(line: bytes) -> None:
    """
    Refuse a chunk-size line (without its CRLF) as Twisted 22.4.0 does.

    @raise http._MalformedChunkedDataError: the size is not one or more hex
        digits, or an extension holds a control byte.
    """
    size, _, extension = line.partition(b";")
    if not size or not _HEX.issuperset(size):
        raise http._MalformedChunkedDataError("Chunk-size must be hexadecimal digits.")
    if extension.translate(None, _CONTROL) != extension:
        raise http._MalformedChunkedDataError("Invalid characters in chunk extensions.")


def strict_chunk_sizes(cls: Any) -> Any:
    """
    A subclass of the chunked decoder C{cls} that refuses what Twisted
    22.4.0 refuses in a chunk-size line before Twisted's own (lax)
    parsing of it.
    """
    parse = http._ChunkedTransferDecoder._dataReceived_CHUNK_LENGTH

    def _dataReceived_CHUNK_LENGTH(self: Any) -> bool:
        end = self._buffer.find(b"\r\n", self._start)
        if end != -1:
            check_chunk_size(bytes(self._buffer[:end]))
        return parse(self)  # type: ignore[no-any-return]

    return type(
        cls.__name__,
        (cls,),
        {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "_dataReceived_CHUNK_LENGTH": _dataReceived_CHUNK_LENGTH,
        },
    )

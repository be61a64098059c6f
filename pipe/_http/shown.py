# -*- test-case-name: tests.test_resource -*-
"""
Client-supplied bytes made safe for one line of text: a message to a
client (L{pipe._transfer.messages}) or a log line of the connection layer
(L{pipe._http.proxy_protocol}).
"""

from __future__ import annotations

__all__ = ["SHOWN", "show"]

#: How many characters of a client-supplied value a line shows.
SHOWN = 64


def show(value: bytes, limit: int = SHOWN) -> str:
    """
    A client-supplied value made safe for a one-line message: printable
    ASCII is kept, every other byte is written C{\\xNN}, and the result is
    cut to C{limit} characters (with C{...} marking the cut).
    """
    out = []
    for byte in value:
        if 0x20 <= byte < 0x7F and byte != 0x5C:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    text = "".join(out)
    if len(text) > limit:
        text = text[:limit] + "..."
    return "'" + text + "'"

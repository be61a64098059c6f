# -*- test-case-name: tests.test_request -*-
"""
The states of a request body, as L{pipe._http.request.StreamingRequest} keeps
them.
"""

from __future__ import annotations

import enum

__all__ = ["Body"]


class Body(enum.Enum):
    """
    The states of a request body, as L{StreamingRequest} sees it.

    ===============  ===========================================  ============
    state            meaning                                      next
    ===============  ===========================================  ============
    C{NONE}          no body (length 0): stock processing         -
    C{STREAMING}     headers in, body arriving, resource rendered COMPLETE,
                                                                  LOST,
                                                                  DISCARDING,
                                                                  ABANDONED
    C{COMPLETE}      the whole body arrived                       -
    C{LOST}          the connection ended before the body did     -
    C{DISCARDING}    the response ended first; the rest of the    -
                     body is read and dropped for a bounded while
    C{ABANDONED}     the body's consumer stopped it: no more      LOST
                     reading, the connection is closing
    C{STOCK}         outside the pipe tree (see L{pipe._http.mount}):  -
                     twisted.web's own handling, the body
                     spooled to C{content}, rendered once complete
    ===============  ===========================================  ============

    A request is C{NONE} or C{STOCK} from its start (decided in
    L{StreamingRequest.gotLength}).
    """

    NONE = "none"
    STREAMING = "streaming"
    COMPLETE = "complete"
    LOST = "lost"
    DISCARDING = "discarding"
    ABANDONED = "abandoned"
    STOCK = "stock"

# -*- test-case-name: tests.test_compat -*-
"""
The Twisted internals txpipe relies on, named in one place and checked once.

The streaming channel (L{pipe._channel} and its layers L{pipe._timers},
L{pipe._writes} and L{pipe._strict}), the response side of its request
(L{pipe._response}), the mount (L{pipe._mount}) and the chunked decoder
(L{pipe._chunked}) override private hooks of twisted.web and read private
state of its channel, request, chunked decoder and file-descriptor
transports.  A Twisted release may rename any
of them, and an override of a renamed hook does not fail: it silently
stops applying (a refused sender would get C{100 Continue} again, a
request's body would be spooled to disk).  So each is listed in
L{REQUIRED}, with what relies on it, and L{check} verifies every one
against the installed Twisted when this module is first imported, which
L{pipe._channel} does: a server cannot start on a Twisted that lacks one;
it fails at once with L{TwistedMismatch} naming each.

Every access to them goes through the functions below (and the class
decorator L{channel_hooks} for the overridden hooks), so that this is the
only module that names a private attribute of Twisted's; a test checks it.

Every public method of Twisted's channel and request that txpipe's
subclasses override is listed too, in L{OVERRIDDEN}, with the Twisted
release whose code it copies where it is a copy rather than an extension
(a fix Twisted makes to its own method does not reach a copy); L{check}
verifies that Twisted still has each, and a test that no override is
missing from the list.

A name is present when its class (or a base) defines it, or when one of
the class's functions assigns or reads it (how instance state such as
C{HTTPChannel._command} exists: set in C{lineReceived}, not declared).
"""

from __future__ import annotations

import types
from typing import Any, Iterable, Iterator, List, Optional, Set, Tuple

import attr
from twisted.internet import abstract, tcp
from twisted.protocols.haproxy import _wrapper as _haproxy_wrapper
from twisted.web import http, server

from ._overrides import OVERRIDDEN, Override, absent_overrides
from ._supported import (
    OLDEST_TWISTED,
    SUPPORTED,
    TwistedMismatch,
    check_version,
    twisted_version,
)

__all__ = [
    "EAGER_PIPELINING",
    "LATE_PIPELINE_BUFFER",
    "LAX_CHUNK_SIZE",
    "LAX_CONTENT_LENGTH",
    "LAX_REQUEST_LINE",
    "OLDEST_TWISTED",
    "OVERRIDDEN",
    "REQUIRED",
    "SUPPORTED",
    "ChunkedTransferDecoder",
    "HAProxyProtocolWrapper",
    "HAProxyWrappingFactory",
    "Internal",
    "MalformedChunkedData",
    "Override",
    "TwistedMismatch",
    "awaiting_request_line",
    "buffered",
    "channel_hooks",
    "check",
    "check_chunk_size",
    "check_chunk_size_line",
    "check_version",
    "chunk_length_line",
    "chunked_buffered",
    "finish_request_body_in_order",
    "forget_idle_timeout",
    "handling_request",
    "hold_pipelined",
    "missing",
    "network_producer",
    "request_disconnected",
    "request_line",
    "respond_bad_request",
    "send_continue",
    "set_network_producer",
    "set_transfer_decoder",
    "suspend_idle_timeout",
    "transfer_decoder",
    "twisted_version",
    "writable_at_once",
]

#: Twisted's chunked request body decoder, which L{pipe._chunked} extends.
ChunkedTransferDecoder = http._ChunkedTransferDecoder

#: The transport a C{haproxy:} listener gives its protocols (Twisted exports
#: only C{proxyEndpoint}): L{pipe._writes} looks through it for the TCP
#: connection, since it passes every byte through once the header is read.
HAProxyProtocolWrapper = _haproxy_wrapper.HAProxyProtocolWrapper

#: The factory a C{haproxy:} listener wraps its factory in
#: (L{pipe._proxy_protocol} gives it a checking protocol).
HAProxyWrappingFactory = _haproxy_wrapper.HAProxyWrappingFactory


@attr.s(auto_attribs=True, frozen=True)
class Internal:
    """
    One name of Twisted's that txpipe relies on.

    @ivar owner: the Twisted class that has it.
    @ivar name: the attribute, method or hook.
    @ivar hook: whether txpipe overrides it (it must be a method of
        C{owner}), rather than reads or sets it.
    @ivar why: who relies on it, and for what.
    """

    owner: type
    name: str
    hook: bool
    why: str


def _hook(owner: type, name: str, why: str) -> Internal:
    return Internal(owner, name, True, why)


def _state(owner: type, name: str, why: str) -> Internal:
    return Internal(owner, name, False, why)


_Channel = http.HTTPChannel
_Decoder = http._ChunkedTransferDecoder

#: Every Twisted internal the project relies on.
REQUIRED: Tuple[Internal, ...] = (
    _hook(
        _Channel,
        "_send100Continue",
        "_channel: no automatic 100 Continue for a request that streams (it "
        "sends it only when it accepts the body); Twisted's own for any other",
    ),
    _hook(
        _Channel,
        "_respondToBadRequestAndDisconnect",
        "_channel: a malformed request gets a plain-text 400, never mixed "
        "into a response that has begun",
    ),
    _hook(
        _Channel,
        "allHeadersReceived",
        "_channel: the body streams from the moment the headers are in",
    ),
    _state(
        _Channel,
        "_networkProducer",
        "_channel: the transport's reading is paused through one gate",
    ),
    _state(_Channel, "_command", "_channel, _mount: the method, before the body"),
    _state(_Channel, "_path", "_channel, _mount: the path, before the body"),
    _state(_Channel, "_version", "_channel, _mount: the HTTP version, before the body"),
    _state(
        _Channel,
        "_savedTimeOut",
        "_channel, _timers: the idle timeout is off while a body streams",
    ),
    _state(
        _Channel,
        "_transferDecoder",
        "_channel: the chunked decoder is replaced by pipe._chunked's",
    ),
    _state(_Channel, "requests", "_channel, server: the requests in progress"),
    _state(
        _Channel,
        "_maybeChooseTransferDecoder",
        "_compat: whether Twisted checks Content-Length (LAX_CONTENT_LENGTH)",
    ),
    _hook(
        _Channel,
        "_finishRequestBody",
        "_strict: what follows a body is kept before the request is handled "
        "(Twisted < 24.7.0; a copy of Twisted 24.7.0's)",
    ),
    _state(
        _Channel,
        "_handlingRequest",
        "_strict: whether a request is being answered (Twisted < 23.10.0)",
    ),
    _state(
        _Channel,
        "_dataBuffer",
        "_strict: what is read meanwhile, kept for later (Twisted < 23.10.0)",
    ),
    _state(
        _Channel,
        "_HTTPChannel__first_line",
        "_strict: whether a line is a request line (Twisted < 24.7.0)",
    ),
    _state(
        server.Request,
        "_disconnected",
        "_response: whether the connection is still there",
    ),
    _hook(
        _Decoder,
        "_dataReceived_CHUNK_LENGTH",
        "_chunked: Twisted's own parsing of a chunk-size line",
    ),
    _hook(
        _Decoder,
        "dataReceived",
        "_chunked: chunks parsed in place, Twisted's own code for the rest",
    ),
    _hook(_Decoder, "_dataReceived_BODY", "_chunked: the state named BODY"),
    _hook(_Decoder, "_dataReceived_CRLF", "_chunked: the state named CRLF"),
    _state(_Decoder, "state", "_chunked: the decoder's state"),
    _state(_Decoder, "length", "_chunked: what is left of the chunk"),
    _state(_Decoder, "_buffer", "_chunked: what Twisted's decoder holds"),
    _state(_Decoder, "_start", "_chunked: where its line search starts"),
    _state(
        abstract.FileDescriptor,
        "dataBuffer",
        "_writes: a transport with nothing buffered is written to directly",
    ),
    _state(abstract.FileDescriptor, "offset", "_writes: the same"),
    _state(abstract.FileDescriptor, "_tempDataLen", "_writes: the same"),
    _state(abstract.FileDescriptor, "_writeDisconnected", "_writes: the same"),
    _state(
        tcp.Connection,
        "TLS",
        "_writes: only a plain TCP connection is written to directly",
    ),
)


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_names(constant)


def _names_of(owner: type) -> Set[str]:
    """
    What C{owner} and its bases define, and every attribute name their
    functions use.
    """
    names: Set[str] = set()
    for cls in owner.__mro__:
        for name, value in vars(cls).items():
            names.add(name)
            function = getattr(value, "__func__", value)
            code = getattr(function, "__code__", None)
            if isinstance(code, types.CodeType):
                names.update(_code_names(code))
    return names


def missing(required: Iterable[Internal] = REQUIRED) -> List[Internal]:
    """
    The internals the installed Twisted lacks.
    """
    absent = []
    for internal in required:
        if internal.hook:
            present = callable(getattr(internal.owner, internal.name, None))
        else:
            present = internal.name in _names_of(internal.owner)
        if not present:
            absent.append(internal)
    return absent


def check(required: Iterable[Internal] = REQUIRED) -> None:
    """
    Raise L{TwistedMismatch} unless the installed Twisted has every
    internal in C{required}, and every method in L{OVERRIDDEN}.
    """
    absent = missing(required)
    absent.extend(Internal(o.owner, o.name, True, o.where) for o in absent_overrides())
    if absent:
        import twisted

        lines = "\n".join(
            f"  {i.owner.__module__}.{i.owner.__qualname__}.{i.name}"
            f" ({'overridden' if i.hook else 'used'} by {i.why})"
            for i in absent
        )
        raise TwistedMismatch(
            f"txpipe cannot run on Twisted {twisted.__version__}: it lacks\n"
            f"{lines}\ntxpipe needs {SUPPORTED}."
        )


# Access, for the modules that rely on these internals: every read or
# write of one goes through here, so that no other module names one.


def network_producer(channel: http.HTTPChannel) -> Any:
    """
    The producer through which C{channel} pauses its transport's reading.
    """
    return channel._networkProducer


def set_network_producer(channel: http.HTTPChannel, producer: Any) -> None:
    """
    Make C{channel} pause and resume its transport through C{producer}.
    """
    channel._networkProducer = producer


def request_line(channel: http.HTTPChannel) -> Tuple[bytes, bytes, bytes]:
    """
    The method, path and version of the request whose headers C{channel}
    has just parsed (before its body).
    """
    return channel._command, channel._path, channel._version  # type: ignore[attr-defined]


def send_continue(channel: http.HTTPChannel) -> None:
    """
    Send C{100 Continue} on C{channel} with Twisted's own code (the hook
    that L{channel_hooks} overrides in a subclass).
    """
    http.HTTPChannel._send100Continue(channel)


def suspend_idle_timeout(channel: http.HTTPChannel) -> None:
    """
    Turn C{channel}'s idle timeout off until its request is done (as
    Twisted does when a request's body is complete).
    """
    channel._savedTimeOut = channel.setTimeout(None)


def forget_idle_timeout(channel: http.HTTPChannel) -> None:
    """
    Keep Twisted from restarting C{channel}'s idle timeout when its request
    is done (the channel starts its own timers).
    """
    channel._savedTimeOut = None


def transfer_decoder(channel: http.HTTPChannel) -> Any:
    """
    The decoder of the body of the request C{channel} is reading.
    """
    return channel._transferDecoder


def set_transfer_decoder(channel: http.HTTPChannel, decoder: Any) -> None:
    """
    Decode the body of the request C{channel} is reading with C{decoder}.
    """
    channel._transferDecoder = decoder


def request_disconnected(request: server.Request) -> bool:
    """
    Whether C{request}'s connection is gone.
    """
    return bool(request._disconnected)


def buffered(layer: Any) -> Optional[int]:
    """
    Bytes written to a file-descriptor transport that it has not yet handed
    to the kernel, or L{None} if C{layer} is not one.
    """
    buffer = getattr(layer, "dataBuffer", None)
    if buffer is None or not hasattr(layer, "_tempDataLen"):
        return None
    return len(buffer) - layer.offset + layer._tempDataLen  # type: ignore[no-any-return]


def writable_at_once(transport: Any) -> bool:
    """
    Whether a write to C{transport} (a connected TCP transport) may go to
    its socket directly: nothing is buffered, and it is neither closing
    nor closed for writing.
    """
    return not (
        transport.dataBuffer
        or transport._tempDataLen
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
    )


def chunked_buffered(decoder: http._ChunkedTransferDecoder) -> bool:
    """
    Whether Twisted's chunked decoder holds bytes of an unfinished line.
    """
    return bool(decoder._buffer)


def chunk_length_line(decoder: http._ChunkedTransferDecoder, line: Any) -> None:
    """
    Parse one whole chunk-size line (with its CRLF) with Twisted's own
    code, its limits and checks, as if it had been buffered.
    """
    decoder._buffer += line
    decoder._start = 0
    decoder._dataReceived_CHUNK_LENGTH()


#: The hooks of C{HTTPChannel} a subclass overrides, by the public name of
#: its method (see L{channel_hooks}).
_CHANNEL_HOOKS = {
    "automatic_continue": "_send100Continue",
    "answer_unparsable": "_respondToBadRequestAndDisconnect",
}


def channel_hooks(cls: Any) -> Any:
    """
    Class decorator for an C{HTTPChannel} subclass: install its
    C{automatic_continue} as Twisted's C{_send100Continue} and its
    C{answer_unparsable} as C{_respondToBadRequestAndDisconnect}.  The
    hooks were checked at import (L{check}); this checks that the class
    defines each method.
    """
    for public, private in _CHANNEL_HOOKS.items():
        method = getattr(cls, public)
        assert callable(getattr(http.HTTPChannel, private)), private
        setattr(cls, private, method)
    return cls


# What older Twisted releases lack, that txpipe checks itself (pipe._strict
# and pipe._chunked): each is found by looking at the installed Twisted's
# code, not its version number, so that a distribution's backported fix
# counts as the fix.


def _uses(function: Any, name: str) -> bool:
    code = getattr(function, "__code__", None)
    return isinstance(code, types.CodeType) and name in set(_code_names(code))


#: Twisted before 22.4.0 takes a signed C{Content-Length} (C{+3}, C{-3}) as a
#: number (request smuggling, CVE-2022-24801).
LAX_CONTENT_LENGTH = not _uses(_Channel._maybeChooseTransferDecoder, "isdigit")

#: Twisted before 22.4.0 parses a chunk-size line with C{int(size, 16)}
#: (C{-5}, C{0x5}, C{+5} pass) and takes any bytes in chunk extensions
#: (CVE-2022-24801).
LAX_CHUNK_SIZE = not hasattr(http, "_hexint")

#: Twisted before 24.7.0 takes any request line of three words (any
#: whitespace between them, any method, target or version bytes) and any
#: header name that does not end in whitespace.
LAX_REQUEST_LINE = not hasattr(http, "_parseRequestLine")

#: Twisted before 23.10.0 goes on parsing the rest of a read once a request
#: is complete, so a request pipelined behind one still being answered is
#: answered first, its response written into the other's (CVE-2023-46137).
EAGER_PIPELINING = not _uses(_Channel.allContentReceived, "setRawMode")


def _late_pipeline_buffer() -> bool:
    names = list(_code_names(_Channel._finishRequestBody.__code__))
    return names.index("allContentReceived") < names.index("_dataBuffer")


#: Twisted before 24.7.0 handles a request whose body just ended before it
#: keeps what followed the body in the same read, so a request pipelined
#: there is answered late or out of order (CVE-2024-41671).
LATE_PIPELINE_BUFFER = _late_pipeline_buffer()

#: Twisted's error for malformed chunked data, raised by the checks older
#: releases lack.
MalformedChunkedData = http._MalformedChunkedDataError


def respond_bad_request(channel: http.HTTPChannel) -> None:
    """
    Refuse what C{channel} is parsing as Twisted refuses malformed input:
    its (possibly overridden) bad-request hook, which answers and closes.
    """
    channel._respondToBadRequestAndDisconnect()


def awaiting_request_line(channel: http.HTTPChannel) -> bool:
    """
    Whether the next line C{channel} parses is a request line (not a
    header line).
    """
    return bool(channel._HTTPChannel__first_line)  # type: ignore[attr-defined]


def handling_request(channel: http.HTTPChannel) -> bool:
    """
    Whether C{channel} has a complete request it has not finished answering
    (what it reads meanwhile is held for later).
    """
    return bool(channel._handlingRequest)


def hold_pipelined(channel: http.HTTPChannel, data: bytes) -> None:
    """
    Keep C{data}, read while a request is answered, for when it is done
    (as Twisted's C{dataReceived} does).
    """
    channel._dataBuffer.append(data)


def finish_request_body_in_order(cls: Any) -> Any:
    """
    Class decorator for an C{HTTPChannel} subclass: where Twisted handles a
    request before keeping what followed its body (L{LATE_PIPELINE_BUFFER}),
    keep it first, as Twisted 24.7.0 does.
    """
    if LATE_PIPELINE_BUFFER:

        def _finishRequestBody(self: Any, data: bytes) -> None:
            self._dataBuffer.append(data)
            self.allContentReceived()

        cls._finishRequestBody = _finishRequestBody
    return cls


def check_chunk_size_line(cls: Any) -> Any:
    """
    Class decorator for a chunked decoder: where Twisted parses chunk-size
    lines laxly (L{LAX_CHUNK_SIZE}), refuse what Twisted 22.4.0 refuses (a
    size that is not hex digits, chunk extensions with control bytes)
    before Twisted's own parsing.
    """
    if LAX_CHUNK_SIZE:
        parse = _Decoder._dataReceived_CHUNK_LENGTH

        def _dataReceived_CHUNK_LENGTH(self: Any) -> bool:
            end = self._buffer.find(b"\r\n", self._start)
            if end != -1:
                check_chunk_size(bytes(self._buffer[:end]))
            return parse(self)  # type: ignore[no-any-return]

        cls._dataReceived_CHUNK_LENGTH = _dataReceived_CHUNK_LENGTH
    return cls


_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Twisted's C{_chunkExtChars}: tab, and every byte from space up but DEL.
_CONTROL = bytes(c for c in range(256) if (c < 0x20 and c != 0x09) or c == 0x7F)


def check_chunk_size(line: bytes) -> None:
    """
    Refuse a chunk-size line (without its CRLF) as Twisted 22.4.0 does.

    @raise MalformedChunkedData: the size is not one or more hex digits, or
        an extension holds a control byte.
    """
    size, _, extension = line.partition(b";")
    if not size or not _HEX.issuperset(size):
        raise MalformedChunkedData("Chunk-size must be hexadecimal digits.")
    if extension.translate(None, _CONTROL) != extension:
        raise MalformedChunkedData("Invalid characters in chunk extensions.")


check_version()
check()

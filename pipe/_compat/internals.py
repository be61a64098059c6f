# -*- test-case-name: tests.test_compat -*-
"""
The names of Twisted's that txpipe relies on, in one table, checked once.

The streaming channel (L{pipe._http.channel} and its mixins in
L{pipe._http.timers}, L{pipe._http.acknowledging} and L{pipe._http.writes}),
the response side of its request (L{pipe._http.response}), the mount
(L{pipe._http.mount}) and the chunked decoder (L{pipe._http.chunked})
override methods of twisted.web, public and private, and read private state
of its channel, request, chunked decoder and file-descriptor transports.  A
Twisted release may rename any of them, and an override of a renamed
method does not fail: it silently stops applying (a refused sender would
get C{100 Continue} again, a request's body would be spooled to disk).  So
each is listed in L{TWISTED_NAMES}, with what relies on it and, for a
public method whose override copies Twisted's code rather than extending
it, the release it copies (a fix Twisted makes to its own method does not
reach a copy); L{check} verifies every one against the installed Twisted
when this module is first imported, which L{pipe._http.channel} does: a
server cannot start on a Twisted that lacks one; it fails at once with
L{TwistedMismatch} naming each.

Every access to a private name goes through the functions below (and the
class decorator L{channel_hooks} for the overridden private hooks), so that
this folder is the only code that names a private attribute of Twisted's; a
test checks it, and that every override of txpipe's is in the table.  What
only Twisted releases older than 24.7.0 need is in L{pipe._compat.legacy},
with its own table.

A private name is present when its class (or a base) defines it, or when
one of the class's functions assigns or reads it (how instance state such
as C{HTTPChannel._command} exists: set in C{lineReceived}, not declared).
"""

from __future__ import annotations

import enum
import types
from typing import Any, Iterable, Iterator, List, Optional, Set, Tuple

import attr
from twisted.internet import abstract, tcp
from twisted.protocols.haproxy import _wrapper as _haproxy_wrapper
from twisted.web import http, server

from pipe._compat.supported import SUPPORTED, TwistedMismatch, check_version

__all__ = [
    "TWISTED_NAMES",
    "ChunkedTransferDecoder",
    "HAProxyProtocolWrapper",
    "HAProxyWrappingFactory",
    "Internal",
    "Use",
    "buffered",
    "channel_hooks",
    "check",
    "chunk_length_line",
    "chunked_buffered",
    "forget_idle_timeout",
    "hook",
    "missing",
    "network_producer",
    "override",
    "request_disconnected",
    "request_line",
    "send_continue",
    "set_network_producer",
    "set_transfer_decoder",
    "state",
    "suspend_idle_timeout",
    "transfer_decoder",
    "writable_at_once",
]

#: Twisted's chunked request body decoder, which L{pipe._http.chunked} extends.
ChunkedTransferDecoder = http._ChunkedTransferDecoder

#: The transport a C{haproxy:} listener gives its protocols (Twisted exports
#: only C{proxyEndpoint}): L{pipe._http.writes} looks through it for the TCP
#: connection, since it passes every byte through once the header is read.
HAProxyProtocolWrapper = _haproxy_wrapper.HAProxyProtocolWrapper

#: The factory a C{haproxy:} listener wraps its factory in
#: (L{pipe._http.proxy_protocol} gives it a checking protocol).
HAProxyWrappingFactory = _haproxy_wrapper.HAProxyWrappingFactory


class Use(enum.Enum):
    """
    How txpipe relies on a name of Twisted's.

    @cvar OVERRIDE: a public method a txpipe subclass overrides.
    @cvar HOOK: a private method a txpipe subclass overrides.
    @cvar STATE: private state txpipe reads or sets.
    """

    OVERRIDE = "overridden"
    HOOK = "hooked"
    STATE = "used"


@attr.s(auto_attribs=True, frozen=True)
class Internal:
    """
    One name of Twisted's that txpipe relies on.

    @ivar owner: the Twisted class that has it.
    @ivar name: the attribute or method.
    @ivar use: how txpipe relies on it.
    @ivar why: who relies on it, and for what; for an override, the txpipe
        classes that define it (as C{folder.module.Class}).
    @ivar copied_from: for an override that copies Twisted's method rather
        than extending it (calling it through C{super()}), the Twisted
        release whose code it copies, and so must follow.
    """

    owner: type
    name: str
    use: Use
    why: str
    copied_from: Optional[str] = None

    @property
    def overridden(self) -> bool:
        """
        Whether txpipe overrides it (it must be a method of C{owner}).
        """
        return self.use is not Use.STATE


def hook(owner: type, name: str, why: str) -> Internal:
    """A private method of C{owner} that txpipe overrides."""
    return Internal(owner, name, Use.HOOK, why)


def state(owner: type, name: str, why: str) -> Internal:
    """Private state of C{owner} that txpipe reads or sets."""
    return Internal(owner, name, Use.STATE, why)


def override(owner: type, where: str, *names: str) -> List[Internal]:
    """Public methods of C{owner} that the classes C{where} extend."""
    return [Internal(owner, name, Use.OVERRIDE, where) for name in names]


_Channel = http.HTTPChannel
_Request = server.Request
_Decoder = http._ChunkedTransferDecoder

#: Every name of Twisted's that txpipe relies on, on every supported
#: release (what only older releases need: L{pipe._compat.legacy.NAMES}).
TWISTED_NAMES: Tuple[Internal, ...] = (
    Internal(
        _Channel,
        "writeHeaders",
        Use.OVERRIDE,
        "_http.writes.WritePath: through writeSequence, with add_to_head's lines",
        copied_from="26.10.0",
    ),
    *override(_Channel, "_http.writes.WritePath", "write", "writeSequence"),
    *override(
        _Channel,
        "_http.writes.WritePath, _http.timers.Timers, _http.channel.StreamingChannel",
        "connectionMade",
    ),
    *override(
        _Channel,
        "_http.acknowledging.Acknowledgements, _http.timers.Timers,"
        " _http.channel.StreamingChannel",
        "connectionLost",
    ),
    *override(_Channel, "_http.timers.Timers", "requestDone"),
    *override(_Channel, "_http.channel.StreamingChannel", "dataReceived"),
    *override(_Channel, "_http.channel.StreamingChannel", "allHeadersReceived"),
    *override(
        _Request,
        "_http.request.StreamingRequest",
        "gotLength",
        "requestReceived",
        "handleContentChunk",
        "connectionLost",
    ),
    *override(_Request, "_http.response.RespondingRequest", "write", "finish"),
    *override(
        _Channel,
        "_compat.header_values.StrictHeaderValues, on Twisted < 26.10.0",
        "lineReceived",
        "headerReceived",
    ),
    state(
        _Channel,
        "_HTTPChannel__first_line",
        "_compat.header_values, _compat.legacy.parsing: whether a line is a"
        " request line",
    ),
    hook(
        _Channel,
        "_send100Continue",
        "_http.channel: no automatic 100 Continue for a request that streams "
        "(it sends it only when it accepts the body); Twisted's own for any "
        "other",
    ),
    hook(
        _Channel,
        "_respondToBadRequestAndDisconnect",
        "_http.channel: a malformed request gets a plain-text 400, never mixed "
        "into a response that has begun",
    ),
    state(
        _Channel,
        "_networkProducer",
        "_http.channel: the transport's reading is paused through one gate",
    ),
    state(
        _Channel, "_command", "_http.channel, _http.mount: the method, before the body"
    ),
    state(_Channel, "_path", "_http.channel, _http.mount: the path, before the body"),
    state(
        _Channel,
        "_version",
        "_http.channel, _http.mount: the HTTP version, before the body",
    ),
    state(
        _Channel,
        "_savedTimeOut",
        "_http.channel, _http.timers: the idle timeout is off while a body streams",
    ),
    state(
        _Channel,
        "_transferDecoder",
        "_http.channel: the chunked decoder is replaced by _http.chunked's",
    ),
    state(_Channel, "requests", "_http.channel, server: the requests in progress"),
    state(
        server.Request,
        "_disconnected",
        "_http.response: whether the connection is still there",
    ),
    hook(
        _Decoder,
        "_dataReceived_CHUNK_LENGTH",
        "_http.chunked: Twisted's own parsing of a chunk-size line",
    ),
    hook(
        _Decoder,
        "dataReceived",
        "_http.chunked: chunks parsed in place, Twisted's own code for the rest",
    ),
    hook(_Decoder, "_dataReceived_BODY", "_http.chunked: the state named BODY"),
    hook(_Decoder, "_dataReceived_CRLF", "_http.chunked: the state named CRLF"),
    state(_Decoder, "state", "_http.chunked: the decoder's state"),
    state(_Decoder, "length", "_http.chunked: what is left of the chunk"),
    state(_Decoder, "_buffer", "_http.chunked: what Twisted's decoder holds"),
    state(_Decoder, "_start", "_http.chunked: where its line search starts"),
    state(
        abstract.FileDescriptor,
        "dataBuffer",
        "_http.writes: a transport with nothing buffered is written to directly",
    ),
    state(abstract.FileDescriptor, "offset", "_http.writes: the same"),
    state(abstract.FileDescriptor, "_tempDataLen", "_http.writes: the same"),
    state(abstract.FileDescriptor, "_writeDisconnected", "_http.writes: the same"),
    state(
        tcp.Connection,
        "TLS",
        "_http.writes: only a plain TCP connection is written to directly",
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


def missing(names: Iterable[Internal] = TWISTED_NAMES) -> List[Internal]:
    """
    The names the installed Twisted lacks.
    """
    absent = []
    for internal in names:
        if internal.overridden:
            present = callable(getattr(internal.owner, internal.name, None))
        else:
            present = internal.name in _names_of(internal.owner)
        if not present:
            absent.append(internal)
    return absent


def check(names: Iterable[Internal] = TWISTED_NAMES) -> None:
    """
    Raise L{TwistedMismatch} unless the installed Twisted has every name in
    C{names}.
    """
    absent = missing(names)
    if absent:
        import twisted

        lines = "\n".join(
            f"  {i.owner.__module__}.{i.owner.__qualname__}.{i.name}"
            f" ({i.use.value} by {i.why})"
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


check_version()
check()

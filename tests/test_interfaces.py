"""
The connection layer's contracts (L{pipe._http.interfaces}, L{pipe._http.batch}) are
provided by the real objects that claim them: a site's channel, the site,
a channel's own delivery watcher, and a receiver.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface.verify import verifyObject

from pipe._http.batch import IHolder
from pipe._http.channel import StreamingChannel
from pipe._http.delivery import Linger
from pipe._http.interfaces import (
    IConnection,
    IDeliveryConnection,
    IDeliveryWatcher,
    ILingerChannel,
    IPipeSite,
)
from pipe._transfer.parties import Receiver
from pipe.server import PipeSite, make_site


def connected_channel() -> StreamingChannel:
    site = make_site(Clock())  # type: ignore[arg-type]
    channel: StreamingChannel = site.buildProtocol(None)
    channel.makeConnection(StringTransport())
    return channel


def test_the_channel_is_the_connection() -> None:
    """
    A site's channel provides every interface through which the others ask
    for its connection's bytes.
    """
    channel = connected_channel()
    for interface in (IConnection, IDeliveryConnection, ILingerChannel, IHolder):
        assert verifyObject(interface, channel)


def test_the_site_provides_what_its_channels_need() -> None:
    site = make_site(Clock())  # type: ignore[arg-type]
    assert isinstance(site, PipeSite)
    assert verifyObject(IPipeSite, site)


def test_a_channel_needs_a_pipe_site() -> None:
    """
    A channel whose site does not declare L{IPipeSite} refuses to start,
    rather than guessing at what the site offers.
    """
    import pytest
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    site = Site(Resource())
    site.protocol = StreamingChannel  # type: ignore[assignment]
    channel = site.buildProtocol(None)
    with pytest.raises(RuntimeError, match="IPipeSite"):
        channel.makeConnection(StringTransport())


def test_delivery_watchers() -> None:
    """
    A channel's own L{Linger} and a receiver are delivery watchers.
    """
    site = make_site(Clock())  # type: ignore[arg-type]
    channel: StreamingChannel = site.buildProtocol(None)
    channel.makeConnection(StringTransport())
    linger = Linger(channel, 1.0, lambda: None, lambda: None)
    assert verifyObject(IDeliveryWatcher, linger)
    channel.dataReceived(b"GET /api/v1/pipe/x HTTP/1.1\r\nHost: t\r\n\r\n")
    [receiver] = site.registry.rendezvous.abandon(b"x")
    assert isinstance(receiver, Receiver)
    assert verifyObject(IDeliveryWatcher, receiver)

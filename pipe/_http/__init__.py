"""
The connection layer: how HTTP bytes are read, written, acknowledged and
reset.

It owns one connection's bytes, from the socket to a request and back: the
channel (L{pipe._http.channel.StreamingChannel}: reading and its gate, a
request's head before its body, the write path, what the peer
acknowledged, the one reset), the request that streams its upload and its
responses, the chunked decoder, which requests stream (the mount), the
kernel's view of a socket (C{TCP_INFO}, C{SIOCOUTQ}) and who the client is
behind a trusted proxy.  Its contracts with the layers above are the
interfaces of L{pipe._http.interfaces}.

It knows nothing of pipes, senders or receivers.  It may import
L{pipe._compat} (Twisted's internals, and what older releases lack) and
nothing else of txpipe.
"""

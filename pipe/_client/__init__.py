"""
The client behind L{pipe.client}: a send (a source streamed with C{PUT}), a
receive (a pipe streamed into a sink), the body reader with a sink's
backpressure, the client's errors and records.

It stands alone: it imports nothing else of txpipe (only Twisted and treq),
so the client works against any txpipe server.
"""

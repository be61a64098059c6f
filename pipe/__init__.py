# -*- test-case-name: tests.test_exports -*-
"""
txpipe: fan one HTTP upload out to N receivers, streaming, with backpressure.

A sender C{PUT}s or C{POST}s a body to C{/api/v1/pipe/<path>?n=N}; N receivers
C{GET} the same URL; the bytes pass through the server once, at the pace of the
slowest receiver, and nothing is stored.

The public surface is small: L{pipe.server.make_site} builds the
L{twisted.web.server.Site}, L{pipe.resource.PipeResource} is the resource
behind it, L{pipe.tap} is the C{twistd pipe} plugin, L{pipe.signing}
mints signed URLs (the C{txpipe sign} command), L{pipe.client} sends to
and receives from a pipe, L{pipe.logs} is the JSON log observer, and
L{pipe.buildbot} runs the server inside a Buildbot master.  Everything in a
module whose name starts with an underscore is private.

Importing this package has no side effects (in particular it does not import
the global reactor).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

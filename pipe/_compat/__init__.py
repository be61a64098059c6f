"""
Support for Twisted's internals and its older releases: the lowest layer.

L{pipe._compat.supported} is the range of Twisted releases txpipe runs on,
checked before anything else; L{pipe._compat.internals} names, in one
table, every name of Twisted's that txpipe relies on (public methods it
overrides, private hooks and state; checked at import) and is the only
module that reaches a private one; L{pipe._compat.logger} keeps log
namespaces where operators filter on them.  L{pipe._compat.legacy} holds
everything that exists only for Twisted releases older than 24.7.0, and
L{pipe._compat.patches} applies it only where the running Twisted needs it:
raising the floor to 24.7 is deleting that folder.

It imports nothing of txpipe's outside this folder.
"""

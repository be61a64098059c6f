"""
The transfer domain: one sender, its receivers, and the bytes between them.

It owns a pipe request from its parsed form to its end: parsing and
refusals, the signature check, the registry of parties, pipes and limits,
the rendezvous that matches a sender with its receivers, the fan-out that
copies the upload to every branch, the watchdog of stalled receivers and
idle uploads, the L{pipe._transfer.transfer.Transfer} that owns a transfer
from the match to its end, its outcome and its one log event, the counters,
and every C{[ERROR]}/C{[INFO]} line a client reads.

It may import L{pipe._http} (it meets a connection only through that
layer's interfaces), L{pipe._compat}, L{pipe._oidc} (verifying an ID token;
L{pipe._transfer.guard} turns its answers into refusals), L{pipe.signing},
L{pipe._settings} and the package's C{__version__}; nothing above it (the
resources, the site, twistd, the client or the CLI).
"""

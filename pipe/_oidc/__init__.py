"""
OIDC admission, knowing nothing of HTTP: owns the OIDC policy
(L{pipe._oidc.policy}), the issuers' keys (L{pipe._oidc.keys}) and the
verification of a CI job's ID token (L{pipe._oidc.tokens}), put together by
L{pipe._oidc.authority.Authority}; L{pipe._oidc.service} re-reads the policy
on C{SIGHUP}.

It imports only Twisted, treq, PyJWT and the standard library: nothing else
of C{pipe}.  Its answers are values and small named exceptions with a
reason, never HTTP statuses: the pipe resource's glue (L{pipe._transfer.guard})
turns them into responses.
"""

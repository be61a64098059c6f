"""
The C{txpipe} command: C{send}, C{recv}, C{sign} and C{serve}
(L{pipe._cli.main}), the progress bar and the output file of C{send} and
C{recv}, and the command's exit statuses.

It may import the public modules (L{pipe.client}, L{pipe.signing},
L{pipe.tap}), the client's own layer L{pipe._client} (where an ID token
comes from: L{pipe._client.id_token}), L{pipe._settings} and the package's
C{__version__}; nothing imports it but C{python -m pipe} and the console
script.
"""

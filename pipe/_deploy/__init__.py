"""
The container image's entry points: the process that runs C{twistd pipe}
and exits by its drain (L{pipe._deploy.container}), and the image's
C{HEALTHCHECK} (L{pipe._deploy.healthcheck}).

They may import L{pipe.tap}; nothing imports them.
"""

"""
The C{twistd pipe} plugin: see L{pipe.tap}.
"""

from twisted.application.service import ServiceMaker

pipe = ServiceMaker(
    "txpipe",
    "pipe.tap",
    "Fan one HTTP upload out to N receivers (txpipe)",
    "pipe",
)

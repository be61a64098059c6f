# -*- test-case-name: tests.test_hardening -*-
"""
Log namespaces renamed in this release, kept whole for operators until the
next one.

A logger made by L{renamed_logger} publishes each event under its new
namespace, then a copy under the old one without C{log_format} (nor
C{log_failure}, whose traceback a text log would print again): a JSON log
and a filter on the old namespace still see every event, while a text log
(twistd's skips events that have no format, on every supported Twisted)
shows each line once.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, Logger, globalLogPublisher
from zope.interface import implementer

__all__ = ["renamed_logger"]


@implementer(ILogObserver)
class _WithOldNamespace:
    """
    Publish each event, then its copy under the old namespace.
    """

    def __init__(self, old: str) -> None:
        self._old = old

    def __call__(self, event: Any) -> None:
        globalLogPublisher(event)
        copy = dict(event)
        copy.pop("log_format", None)
        copy.pop("log_failure", None)
        copy["log_namespace"] = self._old
        globalLogPublisher(copy)


def renamed_logger(namespace: str, old: str) -> Logger:
    """
    A logger of C{namespace} whose events are also copied under C{old}
    (see the module's docstring).  As a class attribute, like any
    L{Logger}, it logs under the class's own name instead of
    C{namespace}, and still makes the copy.
    """
    return Logger(namespace=namespace, observer=_WithOldNamespace(old))

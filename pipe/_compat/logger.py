# -*- test-case-name: tests.test_hardening -*-
"""
A class-attribute L{Logger} that keeps the namespace it is given.

Twisted's L{Logger}, read as a class attribute, logs under the name of the
class's module and class, whatever namespace it was made with.  txpipe's
log namespaces are what operators filter on, so they must not follow a
module when it moves into another folder: L{pinned_logger} makes a logger
that logs under its own namespace as a class attribute too (with the class,
or the instance, as its source, as Twisted's does).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

__all__ = ["pinned_logger"]


class _PinnedLogger(Logger):
    """
    A L{Logger} whose namespace is the same as a class attribute.
    """

    def __get__(self, instance: object, owner: Optional[type] = None) -> Any:
        source: Any = owner if instance is None else instance
        return _PinnedLogger(self.namespace, source, observer=self.observer)


def pinned_logger(namespace: str) -> Logger:
    """
    A logger that logs under C{namespace}, as a class attribute too.
    """
    return _PinnedLogger(namespace)

# -*- test-case-name: tests.test_signing -*-
"""
Signed single-use pipe URLs: minting them, and the key file.

A signed URL is an ordinary pipe URL with three more query parameters::

    /api/v1/pipe/<path>?n=30&expires=1796000000&scope=send&sig=<43 characters>

C{expires} is a Unix time in whole seconds, C{scope} is C{send} or
C{receive}, and C{sig} is the unpadded base64url HMAC-SHA256, under a key
from the server's C{--secret-file}, of L{canonical} (the scope, the raw
pipe path, C{n}, the expiry, and the quorum C{min} when the URL has one).
The host, the scheme and every other query parameter (C{wait}) are not
covered, so a URL survives a reverse proxy.

    >>> from pipe.signing import load_keys, sign_url
    >>> key = load_keys("/etc/txpipe/secret")[0]
    >>> sign_url("https://pipe.example/api/v1/pipe/build-1?n=30", key, "send", 3600)

C{txpipe sign} does the same from a shell.  The server side lives in
C{pipe._transfer.guard}.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import math
import os
import re
import stat
import time
from typing import List, Optional, Union
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "MIN_KEY_LENGTH",
    "KeyFileError",
    "Scope",
    "canonical",
    "load_keys",
    "sign_url",
    "signature",
]

#: The shortest key accepted, in bytes once its hex or base64 is decoded: a
#: key is a password nobody types, so there is no reason for a short one
#: (C{openssl rand -hex 32} and C{openssl rand -base64 32} give 32).
MIN_KEY_LENGTH = 32

#: The query parameters a signature adds (C{n} is the pipe's own).
SIGNATURE_PARAMETERS = ("expires", "scope", "sig")

_PIPE_PREFIX = "/api/v1/pipe/"
_N_SYNTAX = re.compile(r"[1-9][0-9]*")
#: Key-file permissions, as PostgreSQL checks its key files: no file may be
#: readable or writable by other; a file owned by root may be readable by its
#: group (how Kubernetes mounts a Secret: root, group fsGroup, 0440), a file
#: owned by anyone else by its owner only.  Execute bits mean nothing here.
_OTHER_READ_WRITE = stat.S_IROTH | stat.S_IWOTH
_GROUP_READ_WRITE = stat.S_IRGRP | stat.S_IWGRP
#: A key line: hex digits (read as hex), or base64 in either alphabet
#: (C{+/} or C{-_}), padded or not.
_HEX = re.compile(rb"[0-9a-fA-F]+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+={0,2}")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


class Scope(enum.Enum):
    """
    What a signed URL lets its holder do: C{SEND} (C{PUT}/C{POST}) or
    C{RECEIVE} (C{GET}).
    """

    SEND = "send"
    RECEIVE = "receive"


class KeyFileError(ValueError):
    """
    The secret file cannot be used: missing, unreadable, not a regular
    file, owned by someone else, open to group or other, empty, or a line
    that is neither a comment nor a key.
    """


def _key_length(line: bytes) -> Optional[int]:
    """
    How many bytes the key C{line} (stripped) encodes: a line of hex digits
    is hex (an odd number of them is no key), anything else base64 (C{+/}
    or C{-_}, padded or not); L{None} when it is neither.
    """
    if _HEX.fullmatch(line):
        return len(line) // 2 if len(line) % 2 == 0 else None
    if not _BASE64.fullmatch(line):
        return None
    digits = line.rstrip(b"=").translate(_TO_URLSAFE)
    try:
        return len(base64.urlsafe_b64decode(digits + b"=" * (-len(digits) % 4)))
    except (binascii.Error, ValueError):
        return None


def _parse_keys(text: bytes, path: str) -> List[bytes]:
    """
    The keys of the text of a key file: one per line, surrounding
    whitespace and blank lines ignored, lines starting with C{#} comments.
    A key is the line as written (its characters, not the bytes they
    encode, are the HMAC key); it must be hex or base64 of at least
    L{MIN_KEY_LENGTH} bytes.

    @raise KeyFileError: a line is neither, with its number (never its
        text: it may be a key); or there is no key.
    """
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        length = _key_length(line)
        if length is None or length < MIN_KEY_LENGTH:
            what = (
                "is not hex or base64" if length is None else f"encodes {length} bytes"
            )
            raise KeyFileError(
                f"line {number} of secret file {path!r} {what}: a key is hex or"
                f" base64 of at least {MIN_KEY_LENGTH} bytes (openssl rand -hex 32),"
                " and a comment starts with #"
            )
        keys.append(line)
    if not keys:
        raise KeyFileError(f"secret file {path!r} holds no key")
    return keys


def load_keys(path: Union[str, os.PathLike[str]]) -> List[bytes]:
    """
    The keys of a secret file: one per line (see L{_parse_keys}), the first
    signs and all verify, so a new key is rotated in by adding it first and
    the old one removed once the URLs it signed have expired.

    The file is opened first (without blocking, so a FIFO cannot hang the
    caller) and everything is checked on the open descriptor, so a path
    swapped in between cannot slip past: it must be a regular file (not a
    FIFO, a device such as C{/dev/zero}, or a directory) whose owner and
    mode pass L{_check_permissions}; only then is it read.

    @raise KeyFileError: the file is missing or unreadable, not a regular
        file, owned by someone else or too open (see
        L{_check_permissions}), holds no key, or has a line that is neither
        a comment nor a key.
    """
    name = os.fspath(path)
    try:
        # open follows symbolic links: a Kubernetes Secret's file is a link
        # into its ..data directory, and the target is what is read.
        descriptor = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise KeyFileError(
            f"cannot read secret file {name!r}: {error.strerror}"
        ) from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise KeyFileError(f"secret file {name!r} is not a regular file")
        _check_permissions(name, status.st_mode, status.st_uid)
        with open(descriptor, "rb", closefd=False) as handle:
            text = handle.read()
    except OSError as error:
        raise KeyFileError(
            f"cannot read secret file {name!r}: {error.strerror}"
        ) from None
    finally:
        os.close(descriptor)
    return _parse_keys(text, name)


def _check_permissions(path: str, mode: int, owner: int) -> None:
    """
    Refuse a key file that someone other than this process's user, root,
    or (for a file owned by root) its group could read or change:
    PostgreSQL's rule for its key files, plus the owner.

        - readable or writable by other: refused, whoever owns it;
        - owned by neither root nor this process's effective user:
          refused (that user could rewrite the key and mint URLs);
        - owned by root: its group may read it (0640, 0440), not write it;
        - owned by this process's user: owner only (0600, 0400).

    A Kubernetes Secret mounted with C{defaultMode: 0440} and an C{fsGroup}
    (root, group fsGroup), and a Docker or Compose secret given C{mode:
    0440} and the server's C{gid}, pass; a group-readable file that the
    server's own user owns does not, since any member of that group could
    have been given it.

    @raise KeyFileError: with the mode, the owner and the fix.
    """
    if mode & _OTHER_READ_WRITE:
        raise KeyFileError(
            f"secret file {path!r} is readable or writable by other"
            f" (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    user = os.geteuid()
    if owner not in (0, user):
        raise KeyFileError(
            f"secret file {path!r} is owned by uid {owner}, neither root nor"
            f" this process's user (uid {user}); chown it to one of them"
        )
    if owner == 0 and mode & stat.S_IWGRP:
        raise KeyFileError(
            f"secret file {path!r} is writable by its group"
            f" (mode {stat.S_IMODE(mode):04o}); chmod 640 it"
        )
    if owner != 0 and mode & _GROUP_READ_WRITE:
        raise KeyFileError(
            f"secret file {path!r} is readable or writable by its group"
            f" (mode {stat.S_IMODE(mode):04o}) and owned by uid {owner}, not"
            " root; chmod 600 it (only a file owned by root may be"
            " group-readable)"
        )


def canonical(
    scope: Scope, path: bytes, n: int, expires: int, minimum: Optional[int] = None
) -> bytes:
    """
    The bytes a signature covers.

    @param path: the raw pipe path, after C{/api/v1/pipe/}, exactly as it
        appears in the request line (not percent-decoded).
    @param minimum: the URL's quorum C{min}, when it carries one: then one
        more line, C{min=<M>}, so that a URL signed without C{min} keeps
        its signature and one signed with it cannot lose it or change it.
    """
    message = b"txpipe-url-v1\n%s\n%s\n%d\n%d" % (
        scope.value.encode("ascii"),
        path,
        n,
        expires,
    )
    if minimum is not None:
        message += b"\nmin=%d" % (minimum,)
    return message


def signature(key: bytes, message: bytes) -> str:
    """
    The C{sig} value of C{message} under C{key}: unpadded base64url
    HMAC-SHA256 (43 characters).
    """
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_url(
    url: str,
    key: bytes,
    scope: Union[Scope, str],
    ttl: float,
    now: Optional[float] = None,
) -> str:
    """
    C{url} with a signature for C{scope} that expires C{ttl} seconds from
    C{now}, for one transfer.

    The URL keeps its scheme, host, path and other parameters; an earlier
    C{expires}, C{scope} or C{sig} is replaced.  One signed receive URL
    serves all C{n} receivers of one transfer.

    @param url: a pipe URL, C{http(s)://HOST/api/v1/pipe/<path>[?n=N]}
        (C{n} absent means 1), or one of a pipe tree mounted under a prefix
        (C{http(s)://HOST/ci/api/v1/pipe/<path>}, see
        L{pipe.server.make_site}): the signature covers the path after the
        first C{/api/v1/pipe/}, as the server reads it.
    @param key: the signing key (the first of L{load_keys}).
    @param scope: L{Scope} or its value, C{"send"} or C{"receive"}.
    @param ttl: seconds the URL stays valid, more than 0.
    @param now: the current Unix time (default: the system clock).
    @raise ValueError: the URL is not a pipe URL, its C{n} is malformed, or
        C{ttl} is not positive.
    """
    scope = Scope(scope)
    if not ttl > 0 or math.isinf(ttl):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    parts = urlsplit(url)
    # A mount's prefix never contains api/v1/pipe (pipe._http.mount), so the
    # first one is the pipe's.
    start = parts.path.find(_PIPE_PREFIX)
    if start == -1 or parts.path[start:] == _PIPE_PREFIX:
        raise ValueError(f"not a pipe URL (want {_PIPE_PREFIX}<path>): {url!r}")
    path = parts.path[start + len(_PIPE_PREFIX) :].encode("utf-8")
    kept: List[str] = []
    n_values: List[str] = []
    min_values: List[str] = []
    for part in parts.query.split("&") if parts.query else []:
        name = part.partition("=")[0]
        if name in SIGNATURE_PARAMETERS:
            continue
        if name == "n":
            n_values.append(part.partition("=")[2])
        elif name == "min":
            min_values.append(part.partition("=")[2])
        kept.append(part)
    if len(n_values) > 1 or (n_values and not _N_SYNTAX.fullmatch(n_values[0])):
        raise ValueError(f"n must be given once, as a whole number from 1: {url!r}")
    n = int(n_values[0]) if n_values else 1
    minimum = None
    if min_values:
        if len(min_values) > 1 or not _N_SYNTAX.fullmatch(min_values[0]):
            raise ValueError(
                f"min must be given once, as a whole number from 1: {url!r}"
            )
        minimum = int(min_values[0])
        if minimum > n:
            raise ValueError(f"min must be from 1 to n={n}: {url!r}")
    expires = math.ceil((time.time() if now is None else now) + ttl)
    sig = signature(key, canonical(scope, path, n, expires, minimum))
    kept += [f"expires={expires}", f"scope={scope.value}", f"sig={sig}"]
    return urlunsplit(parts._replace(query="&".join(kept)))

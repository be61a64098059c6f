"""
Signed URLs: minting (L{pipe.signing}), checking and spending
(L{pipe._transfer.guard}), the key file, C{twistd pipe --secret-file} and the
C{txpipe sign} command.  The HTTP side is in test_signing_end_to_end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from pipe._cli import main as _cli
from pipe._transfer.guard import Grant, Guard, Requirement
from pipe._transfer.refusal import Refusal
from pipe.signing import (
    MIN_KEY_LENGTH,
    KeyFileError,
    Scope,
    canonical,
    load_keys,
    sign_url,
    signature,
)
from pipe.tap import Options

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW = 1_800_000_000.0
BASE = "http://pipe.example:8080/api/v1/pipe/"


def params(url: str) -> dict:  # type: ignore[type-arg]
    return {k: v for k, (v,) in parse_qs(urlsplit(url).query).items()}


def guard(
    keys: Optional[List[bytes]] = None, requirement: Requirement = Requirement.ALL
) -> Guard:
    clock = Clock()
    clock.advance(NOW)
    return Guard(keys or [KEY], requirement, clock)


def check(
    g: Guard, url: str, scope: Scope = Scope.SEND, path: Optional[bytes] = None
) -> Optional[Grant]:
    """Check C{url} as a request with C{scope} would be checked."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    raw_path = path if path is not None else parts.path.split("/pipe/", 1)[1].encode()
    return g.check(
        scope,
        raw_path,
        int(query.get("n", ["1"])[0]),
        [v.encode() for v in query.get("expires", [])],
        [v.encode() for v in query.get("scope", [])],
        [v.encode() for v in query.get("sig", [])],
    )


def denied(g: Guard, url: str, scope: Scope = Scope.SEND, **kw: object) -> Refusal:
    with pytest.raises(Refusal) as info:
        check(g, url, scope, **kw)  # type: ignore[arg-type]
    return info.value


# Minting.


def test_sign_url_adds_expiry_scope_and_hmac_of_the_canonical_form() -> None:
    signed = sign_url(BASE + "build-1?n=30&wait=60", KEY, "send", 600, now=NOW)
    assert signed.startswith(BASE + "build-1?n=30&wait=60&expires=")
    p = params(signed)
    assert p["expires"] == str(int(NOW) + 600)
    assert p["scope"] == "send"
    assert p["sig"] == signature(
        KEY, canonical(Scope.SEND, b"build-1", 30, int(NOW) + 600)
    )
    assert len(p["sig"]) == 43


#: Known answers for the wire format in docs/protocol.md, computed from the
#: documented recipe alone (HMAC-SHA256 of "txpipe-url-v1\n<scope>\n<path>\n
#: <n>\n<expires>", unpadded base64url), not from this package: they pin the
#: format, so that a change of it cannot pass unnoticed.
VECTOR_KEY = b"0123456789abcdef0123456789abcdef"
VECTORS = [
    (
        "send",
        "ci/run-42/build.tar",
        30,
        1796000000,
        "ggMa_4an3-txMneFG4XqiIzE9-NxBfrVvazZ6uHu2Nw",
    ),
    (
        "receive",
        "ci/run-42/build.tar",
        30,
        1796000000,
        "6esIb_77hexObHY4zW2dlx-v6tJAD2-r4g-2opSIhDY",
    ),
    ("send", "p%20q", 1, 1800000600, "BCUyI9fy37uceXm9i9LiRPBX4allVUAKCp0aw4zbTwc"),
]


@pytest.mark.parametrize(("scope", "path", "n", "expires", "sig"), VECTORS)
def test_signatures_match_the_documented_test_vectors(
    scope: str, path: str, n: int, expires: int, sig: str
) -> None:
    assert (
        signature(VECTOR_KEY, canonical(Scope(scope), path.encode(), n, expires)) == sig
    )
    query = f"?n={n}" if n != 1 else ""
    signed = sign_url(
        f"https://pipe.example/api/v1/pipe/{path}{query}",
        VECTOR_KEY,
        scope,
        ttl=1000,
        now=expires - 1000.0,
    )
    expected = {"expires": str(expires), "scope": scope, "sig": sig}
    if n != 1:
        expected["n"] = str(n)
    assert params(signed) == expected


def test_sign_url_replaces_an_earlier_signature_and_defaults_n_to_1() -> None:
    first = sign_url(BASE + "p", KEY, Scope.RECEIVE, 10, now=NOW)
    again = sign_url(first, KEY, Scope.SEND, 20, now=NOW)
    assert again.count("sig=") == 1 and again.count("expires=") == 1
    assert params(again)["sig"] == signature(
        KEY, canonical(Scope.SEND, b"p", 1, int(NOW) + 20)
    )


def test_signature_covers_scope_path_n_and_expiry() -> None:
    base = canonical(Scope.SEND, b"p", 3, 100)
    others = [
        canonical(Scope.RECEIVE, b"p", 3, 100),
        canonical(Scope.SEND, b"q", 3, 100),
        canonical(Scope.SEND, b"p", 4, 100),
        canonical(Scope.SEND, b"p", 3, 101),
    ]
    assert len({signature(KEY, m) for m in [base, *others]}) == 5
    assert signature(KEY, base) != signature(OTHER_KEY, base)


@pytest.mark.parametrize(
    "url, ttl",
    [
        ("http://h/other/p", 10),
        (BASE, 10),
        (BASE + "p?n=0", 10),
        (BASE + "p?n=1&n=2", 10),
        (BASE + "p?n=x", 10),
        (BASE + "p", 0),
        (BASE + "p", -5),
        (BASE + "p", float("inf")),
    ],
)
def test_sign_url_refuses_what_is_not_a_signable_pipe_url(url: str, ttl: float) -> None:
    with pytest.raises(ValueError):
        sign_url(url, KEY, "send", ttl)


# Checking.


def test_a_signed_url_is_granted_for_its_scope() -> None:
    g = guard()
    grant = check(g, sign_url(BASE + "p?n=3", KEY, "send", 60, now=NOW))
    assert grant is not None and grant.expires == int(NOW) + 60
    assert check(
        g, sign_url(BASE + "p?n=3", KEY, "receive", 60, now=NOW), Scope.RECEIVE
    )


def test_every_key_verifies_so_keys_rotate() -> None:
    g = guard([KEY, OTHER_KEY])
    assert check(g, sign_url(BASE + "p", OTHER_KEY, "send", 60, now=NOW))
    refused = denied(guard([KEY]), sign_url(BASE + "p", OTHER_KEY, "send", 60, now=NOW))
    assert refused.code == 403


def test_missing_signature_is_401_unless_receivers_may_be_unsigned() -> None:
    assert denied(guard(), BASE + "p").code == 401
    assert denied(guard(), BASE + "p", Scope.RECEIVE).code == 401
    only_send = guard(requirement=Requirement.SEND)
    assert check(only_send, BASE + "p", Scope.RECEIVE) is None
    refused = denied(only_send, BASE + "p", Scope.SEND)
    assert refused.code == 401
    assert refused.body.startswith(b"[ERROR] signature required")


def test_receiver_that_presents_a_signature_has_it_checked_anyway() -> None:
    only_send = guard(requirement=Requirement.SEND)
    forged = sign_url(BASE + "p", OTHER_KEY, "receive", 60, now=NOW)
    assert denied(only_send, forged, Scope.RECEIVE).code == 403


@pytest.mark.parametrize(
    "tamper, word",
    [
        (lambda u: u.replace("n=3", "n=4"), b"signature invalid"),
        (lambda u: u.replace("/p?", "/q?"), b"signature invalid"),
        (lambda u: u.replace("scope=send", "scope=receive"), b"signature invalid"),
        (lambda u: u.replace("expires=", "expires=1"), b"signature invalid"),
        (lambda u: u[:-1] + ("B" if u[-1] != "B" else "C"), b"signature invalid"),
        (lambda u: u + "&sig=" + "A" * 43, b"signature malformed"),
        (lambda u: u.replace("expires=", "expires=-"), b"signature malformed"),
        (lambda u: u.replace("scope=send", "scope=both"), b"signature malformed"),
        (lambda u: u[:-1], b"signature malformed"),
        (lambda u: u.replace("&scope=send", ""), b"signature malformed"),
    ],
)
def test_tampered_urls_are_403_naming_the_check(tamper, word) -> None:  # type: ignore[no-untyped-def]
    url = sign_url(BASE + "p?n=3", KEY, "send", 60, now=NOW)
    refused = denied(guard(), tamper(url))
    assert refused.code == 403
    assert refused.body.startswith(b"[ERROR] " + word)
    assert params(url)["sig"].encode() not in refused.body
    assert b"/p" not in refused.body


def test_wrong_scope_is_403() -> None:
    url = sign_url(BASE + "p", KEY, "receive", 60, now=NOW)
    refused = denied(guard(), url, Scope.SEND)
    assert refused.code == 403
    assert refused.body == (
        b"[ERROR] signature scope: this URL is signed to receive, not to send\n"
    )
    refused = denied(guard(), sign_url(BASE + "p", KEY, "send", 60), Scope.RECEIVE)
    assert b"signed to send, not to receive" in refused.body


def test_expired_url_is_403() -> None:
    g = guard()
    url = sign_url(BASE + "p", KEY, "send", 60, now=NOW)
    assert check(g, url)
    g._clock.advance(60)  # type: ignore[attr-defined]
    assert check(g, url), "valid up to and including its expiry second"
    g._clock.advance(1)  # type: ignore[attr-defined]
    refused = denied(g, url)
    assert refused.code == 403
    assert refused.body == b"[ERROR] signature expired 1 s ago\n"


def test_expired_means_the_clock_passed_expires_even_by_a_fraction() -> None:
    """
    Valid while the server's clock reads at most C{expires}, as
    docs/protocol.md says: half a second later it has expired.
    """
    g = guard()
    url = sign_url(BASE + "p", KEY, "send", 60, now=NOW)
    g._clock.advance(60.5)  # type: ignore[attr-defined]
    assert denied(g, url).body.startswith(b"[ERROR] signature expired")


def test_a_url_valid_longer_than_max_ttl_is_403() -> None:
    """
    With C{--max-ttl}, a leaked key cannot mint a URL that stays valid for
    longer than that from when it is presented; a URL within it passes, and
    later presented, a long-lived one passes too once it is within it.
    """
    clock = Clock()
    clock.advance(NOW)
    g = Guard([KEY], Requirement.ALL, clock, max_ttl=3600)
    assert check(g, sign_url(BASE + "p", KEY, "send", 3600, now=NOW))
    long_lived = sign_url(BASE + "p", KEY, "send", 86400 * 365, now=NOW)
    refused = denied(g, long_lived)
    assert refused.code == 403 and refused.reason == "signature_lifetime"
    assert refused.body == (
        b"[ERROR] signature lifetime: this URL stays valid for 31536000 s more,"
        b" longer than this server allows (3600 s; see --max-ttl)\n"
    )
    clock.advance(86400 * 365 - 3600)
    assert check(g, long_lived)
    unlimited = Guard([KEY], Requirement.ALL, clock, max_ttl=0)
    assert check(unlimited, sign_url(BASE + "p", KEY, "send", 10**9, now=NOW))


def test_max_ttl_allows_rounding_and_a_signer_clock_a_little_ahead() -> None:
    """
    A URL signed for exactly C{max_ttl} passes although C{expires} is rounded
    up and the signer's clock runs 30 s ahead; a minute and more beyond the
    limit is refused.
    """
    clock = Clock()
    clock.advance(NOW)
    g = Guard([KEY], Requirement.ALL, clock, max_ttl=3600)
    assert check(g, sign_url(BASE + "p", KEY, "send", 3600, now=NOW + 30.5))
    refused = denied(g, sign_url(BASE + "p", KEY, "send", 3600 + 61, now=NOW))
    assert refused.reason == "signature_lifetime"


def test_max_ttl_option_defaults_to_a_day() -> None:
    options = Options()
    options.parseOptions([])
    assert options.settings().max_ttl == 86400
    options = Options()
    options.parseOptions(["--max-ttl", "600"])
    assert options.settings().max_ttl == 600
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--max-ttl", "-1"])


def test_a_spent_url_is_refused_until_it_expires_then_forgotten() -> None:
    g = guard()
    send = sign_url(BASE + "p", KEY, "send", 60, now=NOW)
    receive = sign_url(BASE + "p", KEY, "receive", 30, now=NOW)
    grants = [check(g, send), check(g, receive, Scope.RECEIVE), None]
    # Not spent until the transfer starts: the same URL may wait again.
    assert check(g, send)
    g.spend(grants)
    g.spend(grants)
    assert g.spent_count == 2
    for url, scope in [(send, Scope.SEND), (receive, Scope.RECEIVE)]:
        refused = denied(g, url, scope)
        assert refused.code == 403 and b"already used" in refused.body
    g._clock.advance(31)  # type: ignore[attr-defined]
    assert g.spent_count == 1
    g._clock.advance(30)  # type: ignore[attr-defined]
    assert g.spent_count == 0
    assert denied(g, send).body.startswith(b"[ERROR] signature expired")


def test_spent_memory_is_bounded_by_unexpired_urls() -> None:
    g = guard()
    for i in range(1000):
        url = sign_url(BASE + f"p{i}", KEY, "send", 10 + i % 10, now=NOW)
        g.spend([check(g, url)])
    assert g.spent_count == 1000
    g._clock.advance(20)  # type: ignore[attr-defined]
    assert g.spent_count == 0
    assert not g._expiries  # type: ignore[attr-defined]


def test_grant_repr_hides_the_signature() -> None:
    url = sign_url(BASE + "p", KEY, "send", 60, now=NOW)
    grant = check(guard(), url)
    assert params(url)["sig"] not in repr(grant)


# The key file.


def key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


HEX_KEY = "0123456789abcdef" * 4
BASE64_KEY = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="
URLSAFE_KEY = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4-_"


def test_load_keys_reads_one_key_per_line(tmp_path: Path) -> None:
    """
    Blank lines, surrounding whitespace and C{#} comments are skipped; a
    key is hex or base64 (either alphabet, padded or not) of at least 32
    bytes, kept as written.
    """
    path = key_file(
        tmp_path,
        f"# txpipe signing keys - rotate monthly\n  {'a' * 64}  \n\n"
        f"   # the old one\n{BASE64_KEY}\n{URLSAFE_KEY}\n{'B' * 66}\n",
    )
    assert load_keys(path) == [
        b"a" * 64,
        BASE64_KEY.encode(),
        URLSAFE_KEY.encode(),
        b"B" * 66,
    ]
    assert load_keys(str(key_file(tmp_path, HEX_KEY, 0o400))) == [HEX_KEY.encode()]
    assert MIN_KEY_LENGTH == 32


@pytest.mark.parametrize(
    "text, mode, reason",
    [
        ("a" * 64, 0o604, "readable or writable by other"),
        ("a" * 64, 0o644, "readable or writable by other"),
        ("a" * 64, 0o602, "readable or writable by other"),
        ("", 0o600, "holds no key"),
        ("\n  \n", 0o600, "holds no key"),
        ("# only a comment\n", 0o600, "holds no key"),
        # Hex of 31 bytes, base64 of 31 bytes.
        ("a" * 64 + "\n\n" + "b" * 62, 0o600, "line 3 .* encodes 31 bytes"),
        (BASE64_KEY[:40], 0o600, "line 1 .* encodes 30 bytes"),
        # An odd number of hex digits, a comment not marked as one, a
        # sentence: neither hex nor base64.
        ("a" * 65, 0o600, "line 1 .* is not hex or base64"),
        ("a" * 64 + "\ntxpipe signing keys - rotate monthly", 0o600, "line 2 .* not"),
        ("a" * 64 + "\n" + "k" * 32, 0o600, "line 2 .* encodes 24 bytes"),
        (HEX_KEY + "+" + BASE64_KEY[:-1] + "_", 0o600, "line 1 .* not hex or base64"),
    ],
)
def test_load_keys_refuses_unusable_files(
    tmp_path: Path, text: str, mode: int, reason: str
) -> None:
    with pytest.raises(KeyFileError, match=reason) as refused:
        load_keys(key_file(tmp_path, text, mode))
    # The line's text is never shown: it may be a key.
    assert "rotate monthly" not in str(refused.value)
    assert "bbbbbbbb" not in str(refused.value)


# Who owns the key file: PostgreSQL's rule, so that orchestrators' mounts
# work (docs/security.md).  Creating a file owned by root, or by another
# user, needs root (the CI runs as root).

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to give a file another owner",
)
OTHER_UID = 54321
FS_GROUP = 2000


def owned_key_file(tmp_path: Path, mode: int, uid: int, gid: int = 0) -> Path:
    path = key_file(tmp_path, "f" * 64, mode)
    os.chown(path, uid, gid)
    return path


@needs_root
@pytest.mark.parametrize("mode", [0o440, 0o640, 0o400, 0o600])
def test_a_root_owned_key_file_may_be_group_readable(tmp_path: Path, mode: int) -> None:
    """
    Root-owned and readable by its group (a Kubernetes Secret with an
    fsGroup, a Compose secret with a gid) is accepted.
    """
    assert load_keys(owned_key_file(tmp_path, mode, 0, FS_GROUP)) == [b"f" * 64]


@needs_root
@pytest.mark.parametrize("mode", [0o640, 0o440, 0o660, 0o620])
def test_a_group_readable_key_file_of_the_servers_user_is_refused(
    tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = owned_key_file(tmp_path, mode, OTHER_UID, FS_GROUP)
    monkeypatch.setattr(os, "geteuid", lambda: OTHER_UID)
    with pytest.raises(KeyFileError, match=f"owned by uid {OTHER_UID}, not root"):
        load_keys(path)


@needs_root
@pytest.mark.parametrize("mode", [0o400, 0o600])
def test_a_key_file_of_the_servers_user_may_be_owner_only(
    tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = owned_key_file(tmp_path, mode, OTHER_UID)
    monkeypatch.setattr(os, "geteuid", lambda: OTHER_UID)
    assert load_keys(path) == [b"f" * 64]


@needs_root
@pytest.mark.parametrize("uid", [OTHER_UID, 65534])
@pytest.mark.parametrize("mode", [0o400, 0o600, 0o640])
def test_a_key_file_of_another_user_is_refused(
    tmp_path: Path, mode: int, uid: int
) -> None:
    """
    A server running as root refuses a private key file that uid 1000 or
    C{nobody} owns: that user could rewrite the key and mint URLs.
    """
    with pytest.raises(
        KeyFileError,
        match=rf"owned by uid {uid}, neither root nor this process's user \(uid 0\)",
    ):
        load_keys(owned_key_file(tmp_path, mode, uid))


def test_a_key_file_of_another_user_is_refused_whoever_the_server_runs_as(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = key_file(tmp_path, HEX_KEY)
    owner = path.stat().st_uid
    if owner == 0:  # root's files pass whoever the server runs as
        os.chown(path, OTHER_UID, -1)
        owner = OTHER_UID
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(KeyFileError, match=f"owned by uid {owner}, neither root"):
        load_keys(path)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_load_keys_refuses_a_fifo_or_a_device_at_once(
    tmp_path: Path, kind: str
) -> None:
    """
    A FIFO (no writer) does not hang the caller and C{/dev/zero} is not
    read to exhaustion: the type is checked on the open descriptor first.
    """
    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path, 0o600)
    else:
        path = Path("/dev/zero")
    with pytest.raises(KeyFileError, match="is not a regular file"):
        load_keys(path)


@needs_root
@pytest.mark.parametrize("uid", [0, OTHER_UID])
@pytest.mark.parametrize("mode", [0o444, 0o644, 0o604, 0o666])
def test_a_world_readable_key_file_is_refused_whoever_owns_it(
    tmp_path: Path, mode: int, uid: int
) -> None:
    """
    Docker's and Compose's default secret mount (root, 0444) is refused.
    """
    with pytest.raises(KeyFileError, match=r"by other .*chmod 600"):
        load_keys(owned_key_file(tmp_path, mode, uid))


@needs_root
def test_a_root_owned_key_file_must_not_be_group_writable(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"writable by its group .*chmod 640"):
        load_keys(owned_key_file(tmp_path, 0o660, 0, FS_GROUP))


def kubernetes_secret_volume(tmp_path: Path, mode: int) -> Path:
    """
    A Secret volume laid out as the kubelet does: the key's name is a
    symbolic link through C{..data} into a timestamped directory.
    """
    volume = tmp_path / "volume"
    stamped = volume / "..2026_12_03_04_00_00.000000001"
    stamped.mkdir(parents=True)
    target = stamped / "secret"
    target.write_text("5" * 64)
    os.chown(target, 0, FS_GROUP)
    target.chmod(mode)
    (volume / "..data").symlink_to(stamped.name)
    (volume / "secret").symlink_to("..data/secret")
    return volume / "secret"


@needs_root
def test_a_kubernetes_secret_is_checked_through_its_links(tmp_path: Path) -> None:
    """
    The links themselves are 0777: the target's owner and mode decide.
    """
    assert load_keys(kubernetes_secret_volume(tmp_path, 0o440)) == [b"5" * 64]
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(KeyFileError, match="by other"):
        load_keys(kubernetes_secret_volume(other, 0o444))


def test_load_keys_refuses_missing_files_and_directories(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_keys(tmp_path / "missing")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_keys(tmp_path / "dir")


def test_twistd_options_load_the_keys(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(
        [
            "--secret-file",
            str(key_file(tmp_path, "a" * 64)),
            "--require-signature",
            "send",
        ]
    )
    settings = options.settings()
    assert settings.keys == (b"a" * 64,)
    assert settings.require_signature == "send"
    assert "aaaa" not in repr(settings)
    assert Options().settings().keys == ()


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--require-signature", "send"], "needs --secret-file"),
        (["--require-signature", "none"], "all or send"),
    ],
)
def test_twistd_refuses_to_start_without_usable_keys(
    argv: List[str], reason: str
) -> None:
    with pytest.raises(usage.UsageError, match=reason):
        Options().parseOptions(argv)


@pytest.mark.parametrize(
    "mode, reason", [(0o644, "chmod 600"), (None, "cannot read secret file")]
)
def test_twistd_refuses_unusable_secret_files_with_status_1(
    tmp_path: Path, mode: Optional[int], reason: str
) -> None:
    path = key_file(tmp_path, "a" * 64, mode) if mode else tmp_path / "missing"
    with pytest.raises(SystemExit) as info:
        Options().parseOptions(["--secret-file", str(path)])
    assert str(info.value.code).startswith("twistd pipe: ")
    assert reason in str(info.value.code)


# txpipe sign


def test_txpipe_sign_prints_the_signed_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = key_file(tmp_path, f"{'a' * 64}\n{'b' * 64}\n")
    argv = ["sign", "--secret-file", str(secret), "--scope", "receive", "--ttl", "90"]
    assert _cli.main([*argv, BASE + "job?n=4"]) == 0
    signed = capsys.readouterr().out.strip()
    g = Guard([b"b" * 64, b"a" * 64], Requirement.ALL, Clock())
    g._clock.advance(int(params(signed)["expires"]) - 90)  # type: ignore[attr-defined]
    assert check(g, signed, Scope.RECEIVE)
    assert params(signed)["scope"] == "receive"


@pytest.mark.parametrize(
    "secret_text, mode, url, message",
    [
        ("a" * 64, 0o644, BASE + "p", "chmod 600"),
        ("a" * 64, 0o600, "http://h/elsewhere", "not a pipe URL"),
    ],
)
def test_txpipe_sign_exits_2_with_the_reason(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    secret_text: str,
    mode: int,
    url: str,
    message: str,
) -> None:
    secret = key_file(tmp_path, secret_text, mode)
    argv = ["sign", "--secret-file", str(secret), "--scope", "send", "--ttl", "9", url]
    assert _cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and "a" * 64 not in captured.err


def test_txpipe_sign_refuses_a_ttl_beyond_max_ttl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    C{txpipe sign} knows the servers' default limit (a day) and refuses to
    mint a URL they would refuse; C{--max-ttl} names another limit, 0 none.
    """
    secret = key_file(tmp_path, "a" * 64)
    argv = ["sign", "--secret-file", str(secret), "--scope", "send"]
    assert _cli.main([*argv, "--ttl", "86400", BASE + "p"]) == 0
    capsys.readouterr()
    assert _cli.main([*argv, "--ttl", "86401", BASE + "p"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "txpipe sign: --ttl 86401 s is longer than the servers allow"
        " (--max-ttl 86400 s): they would refuse the URL with 403 signature"
        " lifetime\n"
    )
    assert _cli.main([*argv, "--ttl", "700", "--max-ttl", "600", BASE + "p"]) == 2
    assert "(--max-ttl 600 s)" in capsys.readouterr().err
    assert _cli.main([*argv, "--ttl", "1e9", "--max-ttl", "0", BASE + "p"]) == 0
    assert params(capsys.readouterr().out.strip())["scope"] == "send"
    assert _cli.main([*argv, "--ttl", "9", "--max-ttl", "-1", BASE + "p"]) == 2


def test_txpipe_sign_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(["sign", "--scope", "sideways", BASE + "p"])
    assert info.value.code == 2


def test_txpipe_console_script_and_python_m(tmp_path: Path) -> None:
    """
    The installed C{txpipe} script (next to this interpreter, as pip puts
    it) and C{python -m pipe} both sign.
    """
    secret = key_file(tmp_path, "a" * 64)
    args = ["sign", "--secret-file", str(secret), "--scope", "send", "--ttl", "60"]
    script = Path(sys.executable).parent / "txpipe"
    commands = [[sys.executable, "-m", "pipe"]]
    if script.exists():
        commands.append([str(script)])
    elif os.environ.get("TOX_ENV_NAME"):
        pytest.fail(f"no txpipe console script at {script}")
    for command in commands:
        out = subprocess.run(
            [*command, *args, BASE + "p?n=2"],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout
        assert params(out.strip())["scope"] == "send"

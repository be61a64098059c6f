"""
L{pipe.buildbot.SendArtifact} and L{pipe.buildbot.ReceiveArtifact}: the
URL they build (C{n} and C{min} in its query before signing), the options
they refuse, and how the sender's outcome is read from txpipe's closing
line.  (C{tests/buildbot/test_master.py} runs them in a real master.)
"""

from __future__ import annotations

from typing import Any

import pytest

from . import require_buildbot

require_buildbot()

import pytest_twisted  # noqa: E402
from buildbot.config import ConfigErrors  # type: ignore[import]  # noqa: E402
from buildbot.process.properties import (  # type: ignore[import]  # noqa: E402
    Interpolate,
    Properties,
)
from buildbot.process.results import FAILURE, SUCCESS  # type: ignore[import]  # noqa: E402

from pipe.buildbot import (  # noqa: E402
    ReceiveArtifact,
    SendArtifact,
    _sent,
    _with_query,
)

URL = "http://pipe.example/api/v1/pipe/a/b.bin"


def test_with_query_sets_n_and_min_and_keeps_the_rest() -> None:
    assert _with_query(URL, n=3, min=2) == URL + "?n=3&min=2"
    assert _with_query(URL + "?n=9&wait=60", n=3, min=None) == URL + "?wait=60&n=3"
    assert _with_query(URL + "?wait=60", n=None, min=None) == URL + "?wait=60"


@pytest_twisted.ensureDeferred
async def test_the_step_renders_n_and_min_into_the_url() -> None:
    properties = Properties()
    properties.setProperty("artifact", "send/7", "test")
    step = SendArtifact(
        "a.bin", Interpolate(URL.replace("a/b", "%(prop:artifact)s")), n=3, min=2
    )
    rendered = await properties.render(step.url)
    assert rendered == "http://pipe.example/api/v1/pipe/send/7.bin?n=3&min=2"
    # Without n and min, the URL is the user's, untouched (signed elsewhere).
    assert SendArtifact("a.bin", URL + "?n=2&sig=x").url == URL + "?n=2&sig=x"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n": 0}, "n must be a whole number from 1, got 0"),
        ({"min": "2"}, "min must be a whole number from 1, got '2'"),
        ({"n": 2, "min": 3}, "min (3) is more than n (2)"),
    ],
)
def test_bad_n_or_min_is_a_configuration_error(options: Any, message: str) -> None:
    for step in (SendArtifact, ReceiveArtifact):
        with pytest.raises(ConfigErrors) as caught:
            step("a.bin", URL, **options)
        assert any(message in error for error in caught.value.errors), (
            caught.value.errors
        )


DONE_3 = (
    "[INFO] transfer started to 3 receivers\n"
    "[INFO] done: bytes=8 receivers=3/3 in 0.1 s (0.0 MB/s)\n"
)
DONE_2 = "[INFO] done: bytes=8 receivers=2/3 (1 never joined) in 0.1 s\n"


@pytest.mark.parametrize(
    "output, n, quorum, failed, expected",
    [
        (DONE_3, 3, None, False, (SUCCESS, "sent to 3 of 3 receivers")),
        (DONE_3, 3, 2, False, (SUCCESS, "sent to 3 of 3 receivers")),
        # A quorum start passes with a quorum, and only with one.
        (DONE_2, 3, 2, False, (SUCCESS, "sent to 2 of 3 receivers")),
        (DONE_2, 3, None, False, (FAILURE, "sent to 2 of 3 receivers")),
        (DONE_2, 3, 3, False, (FAILURE, "sent to 2 of 3 receivers")),
        # Not this pipe's n, curl failed, or no closing done line.
        (DONE_3, 4, None, False, (FAILURE, "sent to 3 of 3 receivers")),
        (DONE_3, 3, None, True, (FAILURE, "not sent")),
        (
            DONE_3 + "[ERROR] receiver 2 disconnected after 4 bytes\n",
            3,
            None,
            False,
            (FAILURE, "not sent"),
        ),
        (
            "[ERROR] timed out waiting for receivers\n",
            3,
            2,
            False,
            (FAILURE, "not sent"),
        ),
        ("", 1, None, False, (FAILURE, "not sent")),
    ],
)
def test_the_senders_outcome_is_read_from_its_closing_line(
    output: str, n: int, quorum: Any, failed: bool, expected: Any
) -> None:
    assert _sent(output, n, quorum, failed) == expected

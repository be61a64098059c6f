"""
The commands the documentation and the README give a user to copy: every
URL is quoted (in zsh an unquoted C{?n=2} is a glob: C{no matches found}),
and every curl that talks to a pipe fails on an HTTP error (C{-f}), so a
refused or failed transfer never saves an C{[ERROR]} line as the artifact
and exits 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: A URL token: a scheme, or one of the variables the docs keep URLs in.
_URL = re.compile(r"""(?<![\w"'$])(https?://\S+|\$\{?(URL|RECV|SEND|A|B)\b\}?\S*)""")
_PIPE = re.compile(r"/api/v1/pipe/|\$\{?(URL|RECV|SEND|A|B)\b")


def code_lines(page: Path) -> Iterator[Tuple[int, str]]:
    """
    The lines of C{page}'s code blocks (fenced, or indented by four spaces
    after a blank line), with their numbers.
    """
    fenced = False
    indented = False
    previous_blank = True
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            if line.startswith("    ") and (indented or previous_blank):
                indented = True
            elif line.strip():
                indented = False
        previous_blank = not line.strip()
        if fenced or indented:
            # A shell comment is prose.
            yield number, re.sub(r"(^|\s)#.*$", "", line)


def curl_commands(page: Path) -> Iterator[Tuple[int, str]]:
    for number, line in code_lines(page):
        for command in re.split(r"\|\||&&|[|;]", line):
            if re.search(r"(^|\s)curl\s", command):
                yield number, command.strip()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_urls_in_commands_are_quoted(page: Path) -> None:
    for number, line in code_lines(page):
        for match in _URL.finditer(line):
            url = match.group(0)
            if "?" in url or "&" in url or url.startswith("$"):
                pytest.fail(f"{page.name}:{number}: unquoted URL {url!r} in {line!r}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_curl_that_talks_to_a_pipe_fails_on_error(page: Path) -> None:
    for number, command in curl_commands(page):
        if _PIPE.search(command) and not re.search(
            r"\s(-[a-zA-Z]*f[a-zA-Z]*|--fail)\b", command
        ):
            pytest.fail(f"{page.name}:{number}: curl without -f: {command!r}")


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    """
    The checks themselves: an unquoted URL and a pipe curl without -f are
    found, their fixed forms pass.
    """
    bad = "    curl http://h/api/v1/pipe/x?n=2 | tar x\n"
    good = '    curl -fsS "http://h/api/v1/pipe/x?n=2" | tar x\n'
    page = ROOT / "tests" / "_docs_check.md"
    try:
        page.write_text("Text\n\n" + bad)
        assert list(_URL.finditer(bad))
        assert [c for _, c in curl_commands(page)] == [
            "curl http://h/api/v1/pipe/x?n=2"
        ]
        page.write_text("Text\n\n" + good)
        assert not [m for _, line in code_lines(page) for m in _URL.finditer(line)]
    finally:
        page.unlink()

"""
The CI recipes of recipes.md, checked mechanically (C{tox -e docs}): each
YAML block is extracted and validated against its CI system's schema with
C{check-jsonschema} (the schemas it ships, no network), so a recipe a user
copies is at least a valid workflow or pipeline.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent / "recipes.md"

#: Each recipe's heading in recipes.md, and the schema its YAML must meet.
SCHEMAS = {
    "## GitHub Actions": "vendor.github-workflows",
    "## GitLab CI": "vendor.gitlab-ci",
    "## A matrix where not every runner arrives: `min`": "vendor.github-workflows",
    "## GitHub Actions: txpipe as a service container": "vendor.github-workflows",
    "## GitLab CI: txpipe as a service": "vendor.gitlab-ci",
}


def yaml_block(heading: str) -> str:
    """
    The first YAML block under C{heading} (before the next heading).
    """
    section = RECIPES.read_text().split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, f"no YAML block under {heading!r}"
    return match.group(1)


def validate(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            schema,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("heading", sorted(SCHEMAS))
def test_recipe_is_valid_for_its_ci(heading: str, tmp_path: Path) -> None:
    path = tmp_path / "recipe.yml"
    path.write_text(yaml_block(heading))
    result = validate(SCHEMAS[heading], path)
    assert result.returncode == 0, result.stdout + result.stderr


#: One schema violation per recipe (valid YAML, wrong structure).
BREAKAGE = {
    "## GitHub Actions": ("\njobs:\n", "\njobz:\n"),
    "## GitLab CI": ("parallel: 4", "parallel: four"),
    "## GitHub Actions: txpipe as a service container": (
        "        ports:\n",
        "        portz:\n",
    ),
    "## GitLab CI: txpipe as a service": ("alias: pipe", "alias: [pipe]"),
    "## A matrix where not every runner arrives: `min`": (
        "fail-fast: false",
        "fail-fast: [false]",
    ),
}


@pytest.mark.parametrize("heading", sorted(SCHEMAS))
def test_the_check_fails_a_broken_recipe(heading: str, tmp_path: Path) -> None:
    """
    The same check refuses the recipe with one key wrong: it is not a check
    that cannot fail.
    """
    old, new = BREAKAGE[heading]
    text = yaml_block(heading)
    assert old in text
    path = tmp_path / "recipe.yml"
    path.write_text(text.replace(old, new, 1))
    result = validate(SCHEMAS[heading], path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr

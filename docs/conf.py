"""
Sphinx configuration of the txpipe documentation site (C{tox -e docs}).

The pages are the Markdown files of this directory (MyST); the API
reference is generated from the epytext docstrings by pydoctor, the tool
Twisted's own documentation uses, through its Sphinx extension.
"""

import re
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
version = release = re.search(
    r'^__version__ = "([^"]+)"$',
    (_root / "pipe" / "__init__.py").read_text(encoding="utf-8"),
    re.MULTILINE,
).group(1)

project = "txpipe"
author = "the txpipe developers"
copyright = "2026, the txpipe developers"

extensions = [
    "myst_parser",
    "sphinx.ext.intersphinx",
    "pydoctor.sphinx_ext.build_apidocs",
]
# No inventories are fetched: the build must work offline.
intersphinx_mapping: dict = {}
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 4
myst_enable_extensions = ["deflist"]

html_theme = "alabaster"
html_title = f"txpipe {version}"
html_theme_options = {
    "description": "Fan one HTTP upload out to N receivers",
    "fixed_sidebar": True,
}

# pydoctor writes the API reference into the HTML output under api/.
pydoctor_args = [
    f"--project-name=txpipe {version}",
    "--docformat=epytext",
    f"--project-base-dir={_root}",
    "--quiet",
    "--html-output={outdir}/api",
    str(_root / "pipe"),
]
pydoctor_url_path = "api/"

"""The docs cannot drift from the code: settings, routes and links are checked against what exists.

- docs/configuration.md lists every Settings field as LOOKALIKE_<NAME>, and no page names a LOOKALIKE_*
  variable that Settings does not have;
- docs/api.md's route table lists every route of the OpenAPI schema (and the page routes kept out of
  it), and no route that does not exist;
- every relative link and #anchor in README.md, CONTRIBUTING.md and docs/*.md resolves;
- .ci/run runs exactly the README's test commands.
The error table of docs/api.md is checked against app/core/errors.py in tests/unit/test_errors.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from app.core.settings import ENV_PREFIX, Settings
from app.http.app import create_app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(DOCS.glob("*.md"))]

# LOOKALIKE_* names the docs may mention although Settings has no such field, each with the reason.
# None today: the variables that only the tests and benchmarks read have no LOOKALIKE_ prefix
# (HARDENING_SCALE, CHROMIUM_BINARY, ... in CONTRIBUTING.md), so they cannot be taken for settings.
NOT_SETTINGS: dict[str, str] = {}

# Routes served but kept out of the OpenAPI schema (the web page), with a path that answers 200.
PAGE_ROUTES = {("GET", "/"): "/", ("GET", "/static/{name}"): "/static/app.js"}

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside code blocks (a `# comment` in a shell block is not a heading)."""
    return FENCE.sub("", text)


def section(text: str, heading: str) -> str:
    """The body of `## heading` up to the next heading of level 2 or higher."""
    body = prose(text).split(f"\n## {heading}\n", 1)[1]
    end = re.search(r"^#{1,2} ", body, re.M)
    return body if end is None else body[: end.start()]


def table_rows(text: str) -> list[list[str]]:
    """The cells of the body rows of the first Markdown table in `text` (header and |---| skipped)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path.read_text(encoding="utf-8")), re.M):
        base = slug(heading)
        name, n = base, 0
        while name in found:  # repeated headings get -1, -2, ... like on GitHub
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def broken_links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", prose(page.read_text(encoding="utf-8")))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def test_slug_follows_github() -> None:
    assert slug("Backfill: fill a candidate's vectors") == "backfill-fill-a-candidates-vectors"
    assert slug("GET /similar/{item_id}") == "get-similaritem_id"
    assert slug("Model delivery: baked in or mounted") == "model-delivery-baked-in-or-mounted"


def test_configuration_page_lists_exactly_the_settings() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    listed = [row[0].strip("`") for row in table_rows(section(text, "All settings"))]
    assert len(listed) == len(set(listed)), "a setting is listed twice"
    expected = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert set(listed) - expected == set(), "the table names variables Settings does not have"
    assert expected - set(listed) == set(), "settings missing from docs/configuration.md"


def test_no_page_names_a_setting_that_does_not_exist() -> None:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | set(NOT_SETTINGS)
    unknown = {
        f"{page.relative_to(ROOT)}: {name}"
        for page in PAGES
        for name in re.findall(ENV_PREFIX + r"[A-Z0-9_]+", page.read_text(encoding="utf-8"))
        if name not in known
    }
    assert unknown == set()


def test_api_page_lists_exactly_the_routes(tmp_path: Path) -> None:
    app = create_app(Settings(qdrant_path=tmp_path / "qdrant"))  # the lifespan (models, store) does not run
    schema = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }
    assert len(schema) >= 20  # the schema was read, not an empty one
    client = TestClient(app)
    for route, example in PAGE_ROUTES.items():
        assert route not in schema
        assert client.get(example).status_code == 200, f"{route} is not served"

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    rows = table_rows(section(text, "Routes"))
    listed = [(row[0], row[1].strip("`")) for row in rows]
    assert len(listed) == len(set(listed)), "a route is listed twice"
    expected = schema | set(PAGE_ROUTES)
    assert set(listed) - expected == set(), "docs/api.md lists routes the service does not have"
    assert expected - set(listed) == set(), "routes missing from docs/api.md's route table"


def test_every_page_exists_and_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert f"]({page.relative_to(ROOT)})" in readme, f"README.md does not link {page.relative_to(ROOT)}"


def test_relative_links_and_anchors_resolve() -> None:
    broken = [problem for page in PAGES for problem in broken_links(page)]
    assert broken == []


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A heading: here\n", encoding="utf-8")
    page.write_text(
        "# Page\n\n[ok](other.md#a-heading-here) [self](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nope) [bad self](#nope)\n"
        "```bash\n# a comment, not a heading\n[not a link](nowhere.md)\n```\n`[code](nowhere.md)`\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#nope (no such heading)",
        "page.md: #nope (no such heading)",
    ]


def test_ci_runs_exactly_the_readme_test_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M)]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in ci if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == blocks[1:3]  # the README's second (install + test) and third (browser) commands

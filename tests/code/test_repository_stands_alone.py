"""The repository explains itself: no file sends a reader outside it, and every docs link resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Files that live beside a developer's checkout but not in the repository: a pointer to one is a dead end.
OUTSIDE_POINTERS = re.compile(r"\.\./shared|DESIGN\.md|sdk-notes\.md")
# tests/ and .ci/ may name them: CI compares vendored copies with the originals, and this file names them.
EXEMPT_PREFIXES = ("tests/", ".ci/")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
BACKTICKED_DOC = re.compile(r"`(docs/[\w.-]+\.md)`")
# Code is not prose: a regex such as `(-*[a-z])` in a code span or a fenced block is no link.
FENCED_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def tracked_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return [name for name in listing.split("\0") if name]


def outside_pointers(files: list[str], root: Path) -> list[str]:
    """``path:line: text`` for every line of a non-exempt file that names a file outside the repository."""
    found = []
    for name in files:
        if name.startswith(EXEMPT_PREFIXES):
            continue
        path = root / name
        if not path.is_file():  # deleted in the work tree but still tracked
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE_POINTERS.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    return found


def link_targets(markdown: str) -> tuple[list[str], list[str]]:
    """Relative markdown link targets (anchor dropped) and backticked ``docs/x.md`` mentions."""
    relative = []
    prose = CODE_SPAN.sub("", FENCED_BLOCK.sub("", markdown))
    for target in MARKDOWN_LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        relative.append(target.split("#", 1)[0])
    return relative, BACKTICKED_DOC.findall(markdown)


def broken_links(pages: list[Path], root: Path) -> list[str]:
    """``page: target`` for every relative link that names no existing file (links resolve from the page,
    backticked ``docs/x.md`` mentions from the repository root)."""
    broken = []
    for page in pages:
        relative, doc_mentions = link_targets(page.read_text(encoding="utf-8"))
        for target in relative:
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(root)}: {target}")
        for mention in doc_mentions:
            if not (root / mention).is_file():
                broken.append(f"{page.relative_to(root)}: {mention}")
    return broken


def documentation_pages(root: Path) -> list[Path]:
    return sorted((root / "docs").glob("*.md")) + [root / "README.md"]


def test_no_tracked_file_points_outside_the_repository() -> None:
    assert outside_pointers(tracked_files(), REPO) == []


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = documentation_pages(REPO)
    assert len(pages) > 5  # the scan found the docs at all
    assert broken_links(pages, REPO) == []


@pytest.mark.parametrize("pointer", ["see DESIGN.md", "(sdk-notes.md)", "../shared/schemas"])
def test_a_new_pointer_outside_is_found(tmp_path: Path, pointer: str) -> None:
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "new.py").write_text(f"x = 1\n# {pointer}\n", encoding="utf-8")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_new.py").write_text(f"# {pointer}\n", encoding="utf-8")
    found = outside_pointers(["steps/new.py", "tests/test_new.py"], tmp_path)
    assert found == [f"steps/new.py:2: # {pointer}"]


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "real.md").write_text("# real\n", encoding="utf-8")
    page = tmp_path / "docs" / "index.md"
    page.write_text(
        "[ok](real.md#real) [url](https://docs.aws.amazon.com/x.html) [here](#top)\n"
        "[gone](missing.md) `docs/real.md` `docs/absent.md` [up](../README.md) `re](-*[a-z])`\n"
        "```\n[fenced](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links([page], tmp_path) == [
        "docs/index.md: missing.md",
        "docs/index.md: ../README.md",
        "docs/index.md: docs/absent.md",
    ]

"""The documentation holds together: README.md is a short front page, its links and docs/'s lead
somewhere, and no table cell is too long to read."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_README_LINES = 250
MAX_CELL = 300

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and tables there are examples, not ours)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    text = "\n".join(prose(path.read_text(encoding="utf-8")))  # a link's text may wrap
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.name}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{path.name}: {target} (no such heading)")
    return broken


def long_cells(path: Path) -> list[str]:
    found = []
    for number, line in enumerate(prose(path.read_text(encoding="utf-8")), 1):
        if line.lstrip().startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
            found += [f"{path.name}: row {number}: {len(c.strip())} characters: {c.strip()[:60]}..."
                      for c in cells if len(c.strip()) > MAX_CELL]
    return found


def test_the_readme_is_a_short_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_README_LINES


def test_the_docs_exist_and_the_readme_leads_to_each():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in sorted((ROOT / "docs").glob("*.md")):  # a page nothing leads to is a page nobody reads
        assert f"docs/{doc.name}" in readme, f"README.md does not link docs/{doc.name}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_and_heading(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.name)
def test_no_table_cell_is_too_long_to_read(path):
    assert long_cells(path) == []


def test_the_checks_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A `page`: its title\n\n[ok](#a-page-its-title) [gone](missing.md) [bad](#nowhere)\n\n"
        f"| a | b |\n| --- | --- |\n| {'x' * (MAX_CELL + 1)} | y |\n\n"
        "```\n[in code](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["page.md: missing.md (no such file)", "page.md: #nowhere (no such heading)"]
    assert len(long_cells(page)) == 1

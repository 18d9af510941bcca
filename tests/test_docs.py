"""The README and docs/ stay true: every relative link resolves, every ``hpa-tune`` flag exists."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from hpa_tune.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_COMMAND = re.compile(r"\bhpa-tune\s+([a-z][a-z-]*)")
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _without_code_blocks(page.read_text(encoding="utf-8"))
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _code_texts(text: str) -> list[str]:
    """Every code-block line (comments cut) and every inline code span of a page."""
    out: list[str] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
        out.extend(line.split(" #")[0] for line in block.splitlines())
    out.extend(_CODE_SPAN.findall(_without_code_blocks(text)))
    return out


def _documented_flags(text: str) -> list[tuple[str, str]]:
    """(command, flag) for each ``--flag`` written after ``hpa-tune COMMAND`` in code."""
    found = []
    for code in _code_texts(text):
        matches = list(_COMMAND.finditer(code))
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(code)
            for flag in _FLAG.findall(code[match.end() : end]):
                found.append((match.group(1), flag))
    return found


def _flags_of(command: click.Command) -> set[str]:
    flags = {"--help"}
    for param in command.params:
        flags.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return flags


def test_docs_pages_exist_and_readme_links_them() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_readme_fits_on_a_few_screens_with_the_two_commands_first() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200, "README.md is over 200 lines: move detail into docs/"
    first_block = re.search(r"^```[^\n]*\n(.*?)^```", readme, flags=re.M | re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    text = _without_code_blocks(page.read_text(encoding="utf-8"))
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        assert linked.exists(), f"{page.name}: link to {target} — no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{page.name}: link to {target} — no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_documented_command_and_flag_exists(page: Path) -> None:
    commands = cli_main.commands
    for command, flag in _documented_flags(page.read_text(encoding="utf-8")):
        assert command in commands, f"{page.name}: `hpa-tune {command}` is not a command"
        assert flag in _flags_of(commands[command]), (
            f"{page.name}: `hpa-tune {command} {flag}` — no such option "
            f"(valid: {', '.join(sorted(_flags_of(commands[command])))})"
        )


def test_the_flag_reader_catches_an_unknown_flag() -> None:
    text = (
        "Run `hpa-tune run SPACE --no-such-flag 3` or\n```bash\nhpa-tune refit EXP --top-k 2\n```\n"
    )
    assert sorted(_documented_flags(text)) == [("refit", "--top-k"), ("run", "--no-such-flag")]
    assert "--no-such-flag" not in _flags_of(cli_main.commands["run"])

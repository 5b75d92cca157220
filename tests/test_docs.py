"""README.md and docs/ cannot drift from the repository: links resolve, options match the CLI, the memory
table is what the code plans, and the README's two commands are what CI runs."""

import importlib.util
import re
from pathlib import Path

import pytest
import typer.main

from glance.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
# [text](target) with one level of brackets inside the text ("[as [klein]](comfyui.md#flux2)"); images too.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """The text without fenced code blocks (a link in an example is not a link)."""
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", prose(page.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        ids.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z]+:", t)]


def test_the_docs_are_the_pages_the_readme_lists():
    assert len(PAGES) > 5
    listed = {REPO / t for t in relative_links(REPO / "README.md") if t.startswith("docs/")}
    assert {p.with_suffix(".md") for p in listed} >= set(PAGES[1:])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_image_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not broken, broken


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nothing) ![img](missing.png)\n\n```\n[code](not-a-link.md)\n```\n")
    assert relative_links(page) == ["#title", "#nothing", "missing.png"]
    assert anchors(page) == {"title"}


def commands() -> dict[str, object]:
    """Every leaf command of the CLI by its full name ("glance export comfyui")."""
    found = {}

    def walk(command, name):
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{name} {sub_name}")
        if not hasattr(command, "commands"):
            found[name] = command

    walk(typer.main.get_command(app), "glance")
    return found


def help_names(command) -> set[str]:
    """What `--help` lists: every visible option's names and each argument's metavar."""
    names = set()
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            names.add((param.metavar or param.name).upper())
        else:
            names.update(param.opts + param.secondary_opts)
    return names - {"-h", "--help"}


def documented_names(section: str) -> set[str]:
    """Options and arguments named in the first column of the section's option tables."""
    names = set()
    for row in re.findall(r"^\|((?:[^|\\]|\\.)*)\|", section, re.MULTILINE):  # the first cell; "\|" is in it
        for code in re.findall(r"`([^`]+)`", row):  # `--seeds`, `--gpu-memory GB`, `PROMPT ...`
            words = code.split()
            names.update(w for w in words if re.fullmatch(r"--?[a-z][a-z0-9-]*", w))
            if re.fullmatch(r"[A-Z][A-Z_]+", words[0]):  # an argument; an option's metavar follows the option
                names.add(words[0])
    return names


def command_sections() -> dict[str, str]:
    text = (DOCS / "commands.md").read_text()
    parts = re.split(r"^## (glance [a-z ]+?) *$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("name", sorted(commands()))
def test_the_commands_page_names_exactly_the_options_of_each_command(name):
    sections = command_sections()
    assert name in sections, f"docs/commands.md has no '## {name}' section"
    in_help, in_docs = help_names(commands()[name]), documented_names(sections[name])
    assert in_help - in_docs == set(), f"{name}: in --help, not in docs/commands.md"
    assert in_docs - in_help == set(), f"{name}: in docs/commands.md, not in --help"


def test_the_commands_page_has_no_section_for_a_command_that_does_not_exist():
    assert set(command_sections()) == set(commands())


def test_the_memory_page_holds_the_plans_the_code_makes():
    spec = importlib.util.spec_from_file_location("memory_table", REPO / "benchmarks" / "memory_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.table()
    assert table.count("\n") == 2 + len(module.KNOWN_SIZES) * len(module.CARDS)
    assert table in (DOCS / "memory.md").read_text(), "rerun benchmarks/memory_table.py into docs/memory.md"


def test_the_readmes_two_commands_are_what_ci_runs():
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in [b.strip() for b in blocks]
    assert "bash .ci/setup && HF_HUB_OFFLINE=1 .venv/bin/glance demo" in [b.strip() for b in blocks]

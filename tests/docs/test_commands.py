"""Every command the README and docs/ show works as written at least as far as `--help`: the
program is there, its subcommand (or module, or make target) exists, and it knows every long
option the line uses. A renamed option or a removed benchmark fails here, not in a reader's
shell."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from voicegw.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Our own programs; other programs in the docs (curl, docker, jq, npm) are not checked.
OURS = re.compile(
    r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*"  # VAR=value prefixes
    r"(?P<command>(?:\.venv/bin/)?(?:voicegw|python|pytest)\s.*|make\s.*)$"
)
SHELL_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LONG_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def commands(text: str) -> list[str]:
    """Our commands in `text`: the lines of its sh blocks (continuations joined, comments
    dropped) and its inline code spans."""
    found: list[str] = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                found.append(line)
    found += [" ".join(span.split()) for span in INLINE.findall(SHELL_BLOCK.sub("", text))]
    return [m["command"] for line in found if (m := OURS.match(line.replace("\\|", "|")))]


def all_commands() -> list[tuple[str, str]]:
    return sorted(
        {(doc.name, command) for doc in DOCUMENTS for command in commands(doc.read_text())}
    )


def test_the_readme_shows_its_two_commands_first() -> None:
    readme = (ROOT / "README.md").read_text()
    first = SHELL_BLOCK.search(readme)
    assert first is not None and readme.index(first.group(0)) < readme.index("\n## ")
    assert [line.split()[:2] for line in first.group(1).splitlines()] == [
        ["make", "run"],
        ["make", "test"],
    ]


def test_the_docs_show_commands_of_every_kind() -> None:
    """The extraction itself finds what it should (a broken pattern would pass everything)."""
    kinds = {command.split()[0].removeprefix(".venv/bin/") for _, command in all_commands()}
    assert kinds >= {"voicegw", "python", "pytest", "make"}


def test_documents_name_only_documents_that_exist() -> None:
    for doc in DOCUMENTS:
        for named in re.findall(r"`(docs/[\w.-]+\.md)`", doc.read_text()):
            assert (ROOT / named).is_file(), f"{doc.name} names {named}"


@pytest.mark.parametrize(("document", "command"), all_commands())
def test_command_parses(document: str, command: str) -> None:
    words = shlex.split(command.replace("…", "x"))
    program = words[0].removeprefix(".venv/bin/")
    options = set(LONG_OPTION.findall(command))
    if program == "make":
        target = words[1]
        made = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert made.returncode == 0, f"{document}: make {target}: {made.stderr}"
        return
    if program == "voicegw":
        help_text = voicegw_help(subcommand(words[1:]))
    elif program == "pytest":
        help_text = program_help(("-m", "pytest"))
    else:
        help_text = program_help(python_target(words[1:]))
    unknown = sorted(option for option in options if option not in help_text)
    assert not unknown, f"{document}: {command!r} uses options its --help does not know"


def subcommand(words: list[str]) -> str:
    """The subcommand of `voicegw` after its own options."""
    rest = list(words)
    while rest and rest[0].startswith("--"):
        rest = rest[2:] if rest[0] == "--log-level" else rest[1:]
    assert rest, "voicegw without a subcommand"
    return rest[0]


@functools.cache
def voicegw_help(name: str) -> str:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, f"voicegw {name} --help: {result.output}"
    return result.output + voicegw_group_help()


@functools.cache
def voicegw_group_help() -> str:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    return result.output


def python_target(words: list[str]) -> tuple[str, ...]:
    """What `python` runs, with its subcommand when it has one (`bench.capacity relay`)."""
    target: tuple[str, ...]
    if words[0] == "-m":
        target, rest = ("-m", words[1]), words[2:]
    else:
        assert words[0].endswith(".py"), f"python {words[0]}: not a module or a script"
        target, rest = (words[0],), words[1:]
    return (*target, rest[0]) if rest and not rest[0].startswith("-") else target


@functools.cache
def program_help(target: tuple[str, ...]) -> str:
    result = subprocess.run(
        [sys.executable, *target, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"python {' '.join(target)} --help: {result.stderr[-2000:]}"
    return result.stdout

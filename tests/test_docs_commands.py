"""The documentation's command lines still match the code: every ``tomo`` command shown in README.md
and docs/*.md parses with the ``tomo`` parser (its options and choices exist; nothing runs), and every
workflow config file the documentation names exists."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from model.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _command_lines() -> list[tuple[str, str]]:
    """(file:line, command) of every line of the docs that is a ``tomo`` command (a code line that
    starts with it; continued lines joined; the README's table cut where its description starts, at
    two spaces). Lines that name several commands at once (``a / b``, ``x|y``) are summaries."""
    out = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^\s*(?:\$ )?(tomo [a-z].*)$", lines[i])
            where = f"{path.relative_to(ROOT)}:{i + 1}"
            if m:
                cmd = m.group(1)
                while cmd.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd = cmd[:-1] + " " + lines[i].strip()
                cmd = re.split(r"\s{2,}", cmd)[0]
                if not re.search(r" / |\|", cmd):
                    out.append((where, cmd))
            i += 1
    return out


COMMANDS = _command_lines()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30 and any(c.startswith("tomo cv-compare") for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_tomo_command_parses(where, command):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(shlex.split(command, comments=True)[1:])
    except SystemExit as e:
        if e.code:
            pytest.fail(f"{where}: `{command}` does not parse: {err.getvalue().strip().splitlines()[-1]}")


def test_every_documented_workflow_config_exists():
    named = {
        m for path in DOCS for m in re.findall(r"workflow/configs/[\w.-]+\.yaml", path.read_text(encoding="utf-8"))
    }
    assert named, "the docs name no workflow config"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"the docs name config files that do not exist: {missing}"

"""make help, how-to-imagenet --help and the README say the same: the stages of the registry in order,
each command's one line from one table (pipeline/summaries.py, which make help reads without the venv),
every target and variable (with its default), each named in the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from how_to_imagenet.pipeline.command import COMMANDS
from how_to_imagenet.pipeline.stage import registry
from how_to_imagenet.pipeline.summaries import SUMMARY
from how_to_imagenet.testing.runs import ENV, PROJECT, VENV, make


def make_help() -> tuple[list[str], dict[str, str]]:
    """The targets (as make help writes them) and each variable's default, from make help."""
    out = make().stdout
    targets_part, variables_part = out.split("\nTargets", 1)[1].split("\n\n", 1)
    targets = [line.split()[0] for line in targets_part.splitlines()[1:] if line.startswith("  ")]
    rows = [re.match(r"  ([A-Z_]+) +(\S+) ", line) for line in variables_part.splitlines()]
    return targets, {m.group(1): m.group(2) for m in rows if m and m.group(1) != "VARIABLE"}


def test_make_help_shows_each_variables_default_as_the_makefile_sets_it():
    _, defaults = make_help()
    text = (PROJECT / "Makefile").read_text()
    set_to = dict(re.findall(r"^([A-Z_]+) \?= ?(.*?)##", text, re.M))
    assert defaults.keys() == set_to.keys() and len(defaults) >= 15
    assert {k: v for k, v in defaults.items() if v != "-"} == {k: v for k, v in set_to.items() if v}
    assert defaults["QUALITY"] == "90" and defaults["CONFIG"] == "config.yaml" and defaults["DATA"] == "-"


def test_make_help_and_the_readme_list_the_same_targets_and_variables():
    targets, defaults = make_help()
    readme = (PROJECT / "README.md").read_text()
    for target in targets:
        name = target.replace("SPLIT", "val")
        assert f"`{name}`" in readme or f"make {name}" in readme, target
    table = re.findall(r"^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)? \|", readme, re.M)
    in_readme = {name for row in table for name in row if name}
    assert in_readme == set(defaults), in_readme ^ set(defaults)


def commands_help() -> list[tuple[str, str]]:
    """The commands and their lines, as `how-to-imagenet --help` lists them."""
    out = subprocess.run([sys.executable, "-m", "how_to_imagenet", "--help"], capture_output=True, text=True,
                         env=ENV, check=True).stdout
    rows = out.split("commands:\n", 1)[1].split("\n\n")[0].splitlines()
    return [(name, text.strip()) for name, text in (row.strip().split(" ", 1) for row in rows)]


def test_make_help_and_the_commands_help_list_the_registrys_stages_in_order():
    targets, _ = make_help()
    stages = [s.name for s in registry()]
    per_stage = [t.removesuffix("-SPLIT") for t in targets if t.removesuffix("-SPLIT") in stages]
    assert per_stage == stages
    listed = [name for name, _ in commands_help()]
    assert [n for n in listed if n in stages] == stages and listed[:len(stages)] == stages


def test_make_help_gives_each_commands_line_as_the_commands_help_does_without_the_venv(tmp_path):
    bare = {**ENV, "PATH": os.pathsep.join(p for p in ENV["PATH"].split(os.pathsep) if not p.startswith(str(VENV)))}
    out = subprocess.run(["make", "--no-print-directory", f"VENV={tmp_path / 'none'}", "help"], cwd=PROJECT,
                         capture_output=True, text=True, env=bare, check=True).stdout
    make_lines = dict(re.findall(r"^  ([a-zA-Z-]+) +(.+)$", out.split("\nVariables", 1)[0], re.M))
    # The Makefile names the command whose line a target shows ('## @download'); nothing else says it.
    named = re.findall(r"^(?:\$\(SPLITS:%=)?([a-z%-]+)\)?:.*## @([a-z]+)$", (PROJECT / "Makefile").read_text(), re.M)
    assert {name for _, name in named} == {*(s.name for s in registry()), *COMMANDS, "all", "train", "val", "evals"}
    command_lines = dict(commands_help())
    for target, name in named:
        line = make_lines[target.replace("%", "SPLIT")]
        assert line == command_lines[name] == SUMMARY[name], (target, line, command_lines[name])

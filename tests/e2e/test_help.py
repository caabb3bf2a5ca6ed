"""make help, how-to-imagenet --help and the README say the same: the stages of the registry in order,
every target and variable (with its default), each named in the README."""

from __future__ import annotations

import re
import subprocess
import sys

from how_to_imagenet.pipeline.stage import registry
from how_to_imagenet.testing.runs import ENV, PROJECT, make


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


def test_make_help_and_the_commands_help_list_the_registrys_stages_in_order():
    targets, _ = make_help()
    stages = [s.name for s in registry()]
    per_stage = [t.removesuffix("-SPLIT") for t in targets if t.removesuffix("-SPLIT") in stages]
    assert per_stage == stages
    out = subprocess.run([sys.executable, "-m", "how_to_imagenet", "--help"], capture_output=True, text=True,
                         env=ENV, check=True).stdout
    listed = [line.split()[0] for line in out.split("commands:\n", 1)[1].split("\n\n")[0].splitlines()]
    assert [n for n in listed if n in stages] == stages and listed[:len(stages)] == stages

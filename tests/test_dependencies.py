"""Install what you use: every import of ferlab is declared in pyproject.toml, the base install runs
predict, EmotionRecognizer and serve, and a command whose extra is missing says which, in one line.

The base-install checks run ferlab in a subprocess whose imports of every extra's libraries fail
as they would where the extra is not installed (``make release-check`` does the same in a real
fresh virtual environment from the built wheel).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from ferlab.common.extras import EXTRA_OF_MODULE

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "ferlab"


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0))


def declared() -> dict[str, set[str]]:
    """Distribution names by group: "base" and each extra (self-references expanded)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"base": {requirement_name(r) for r in project["dependencies"]}}
    raw = project["optional-dependencies"]
    for extra, requirements in raw.items():
        names = set()
        for requirement in requirements:
            name = requirement_name(requirement)
            if name == "ferlab":
                inner = re.search(r"\[(.*)\]", requirement).group(1)
                for sub in inner.split(","):
                    names |= {requirement_name(r) for r in raw[sub.strip()]}
            else:
                names.add(name)
        groups[extra] = names
    return groups


def imported_modules() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in src/ferlab, with the files importing."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "ferlab" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(SRC)))
    return found


def test_every_imported_package_is_declared():
    groups = declared()
    everything = set().union(*groups.values())
    distributions = packages_distributions()
    undeclared = {}
    for module, files in imported_modules().items():
        names = {normalize(d) for d in distributions.get(module, [module])}
        if not names & everything:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_pydantic_and_the_serve_stack_are_in_the_base_install():
    base = declared()["base"]
    for name in ("numpy", "pillow", "opencv-python-headless", "onnxruntime", "pydantic"):
        assert name in base
    for name in ("fastapi", "uvicorn", "python-multipart"):
        assert name in base


def test_the_extras_table_names_the_extra_that_installs_each_library():
    groups = declared()
    distributions = packages_distributions()
    for module, extra in EXTRA_OF_MODULE.items():
        names = {normalize(d) for d in distributions.get(module, [module])}
        assert names & groups[extra], f"{module}: not in the {extra} extra of pyproject.toml"
        assert not names & groups["base"], f"{module}: in the base install, not only {extra}"


def test_every_library_outside_the_base_install_is_in_the_extras_table():
    base = declared()["base"]
    distributions = packages_distributions()
    for module in imported_modules():
        names = {normalize(d) for d in distributions.get(module, [module])}
        if not names & base:
            assert module in EXTRA_OF_MODULE, f"{module}: outside the base install, no extra named"


# Runs ferlab's command line with every extra's libraries failing to import.
BASE_ONLY = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from ferlab.cli import main
code = main(sys.argv[2:])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("LEAKED", leaked, file=sys.stderr)
sys.exit(code)
"""


def run_base_only(*argv: str, blocked=tuple(EXTRA_OF_MODULE)) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-c", BASE_ONLY, ",".join(blocked), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith("LEAKED")]


def test_help_and_version_without_any_extra():
    result = run_base_only("--help")
    assert result.returncode == 0, result.stderr
    assert "predict" in result.stdout and "configs" in result.stdout
    result = run_base_only("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ferlab ")


def test_predict_runs_on_a_real_photo_without_any_extra(astronaut_path):
    result = run_base_only("predict", str(astronaut_path), "--format", "json")
    assert result.returncode == 0, result.stderr
    faces = json.loads(result.stdout)
    assert len(faces) == 1 and faces[0]["emotion"] == "happy"
    assert "LEAKED []" in result.stderr


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["train", "digits_fc", "--out", "{tmp}/run"], "lab"),
        (
            ["search", "random", "spaces/digits_demo", "--trials", "1", "--study-dir", "{tmp}"],
            "lab",
        ),
        (["cnn", "train", "fer2013_cnn_cpu", "--out", "{tmp}/cnn"], "deep"),
    ],
)
def test_a_command_without_its_extra_says_which_in_one_line(tmp_path, argv, extra):
    result = run_base_only(*(a.format(tmp=tmp_path) for a in argv))
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ferlab: error: ") and f"pip install 'ferlab[{extra}]'" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.fixture
def astronaut_path() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / "astronaut.png"

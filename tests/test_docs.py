"""The documentation: the site builds offline with warnings as errors, its configuration reference
is the schema's, and the README stays a short summary whose every figure comes from a record."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ferlab.settings import setting_keys

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LIMIT = 10_240  # bytes: the README is a summary; the rest lives in docs/

# A figure the README quotes: a percentage, a number of points, or faces/photos per second.
FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(%| points| faces/s| photos/s)")


def load_script(name: str):
    """A module from ``scripts/`` (not a package), loaded by path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section(text: str, heading: str) -> str:
    """The Markdown section under ``## heading`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def test_the_configuration_reference_is_generated_from_the_schema():
    reference = load_script("config_reference")
    committed = reference.PAGE.read_text(encoding="utf-8")
    assert committed == reference.page(), "run python scripts/config_reference.py"
    for _, _, schema in reference.KINDS:
        for key in setting_keys(schema):
            assert f"| `{key}` |" in committed, f"{schema.__name__}: {key} is not in the reference"
    assert reference.main(["--check"]) == 0


def test_the_reference_shows_each_rule_the_schema_declares():
    text = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")

    def rows(kind: str) -> dict[str, str]:
        lines = section(text, kind).splitlines()
        return {line.split(" | ")[0].strip("| `"): line for line in lines if line.startswith("| `")}

    fc, cnn = rows("Fully connected training"), rows("CNN training")
    assert "> 0.0" in fc["solver.lr"] and "`0.001`" in fc["solver.lr"]
    assert "`0.05`" in cnn["solver.lr"] and "one of `sgd`, `adamw`" in cnn["solver.optimizer"]
    assert "`[32, 64, 128, 256]`" in cnn["model.widths"] and ">= 8; <= 48" in cnn["augment.crop"]
    assert "known device" in cnn["device.device"] and "known dataset" in fc["data.dataset"]
    assert "refit has no validation" in section(text, "CNN training")  # a check across keys


def test_the_site_builds_offline_with_warnings_as_errors(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert {"index.html", "reference/configuration.html", "model-card.html"} <= pages
    card = (site / "model-card.html").read_text(encoding="utf-8")
    facts = json.loads((ROOT / "src" / "ferlab" / "assets" / "model_card.json").read_text())
    assert f"{facts['accuracy']['public_test']:.2%}" in card  # the shipped card, included
    records = (site / "benchmarks.html").read_text(encoding="utf-8")
    assert "tta_calibration.json" in records and "python benchmarks/tta_calibration.py" in records
    for page in site.rglob("*.html"):  # nothing is fetched from elsewhere when a page opens
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(https?:)?//", html), page


def test_the_readme_is_a_short_summary():
    assert len(README.read_bytes()) < README_LIMIT
    text = README.read_text(encoding="utf-8")
    for heading in ["Quick start", "Install", "The shipped model", "What ferlab guarantees"]:
        assert f"\n## {heading}\n" in text
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), f"README links to a missing page {link}"


def test_the_quick_start_is_the_same_in_the_readme_and_on_the_site():
    readme = section(README.read_text(encoding="utf-8"), "Quick start")
    index = section((DOCS / "index.md").read_text(encoding="utf-8"), "Quick start")
    assert readme == index
    assert re.findall(r"```\n(.*?)```", readme, re.S)[0] == "make demo\nmake test\n"


def figure_sources() -> list[tuple[str, str, str]]:
    """The rows (figure, record, key) of the table on the benchmarks page."""
    table = section(
        (DOCS / "benchmarks.md").read_text(encoding="utf-8"), "Figures quoted in the README"
    )
    rows = re.findall(r"^\| (.+?) \| `([^`]+)` \| `([^`]+)` \|$", table, re.M)
    assert rows, "the benchmarks page lists no figure"
    return rows


def value_at(record: dict | list, key: str):
    node = record
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def matches(figure: str, value: float) -> bool:
    """Whether the record's ``value`` rounds to ``figure`` as the README writes it."""
    number, unit = FIGURE.fullmatch(figure).groups() if FIGURE.fullmatch(figure) else (figure, "")
    decimals = len(number.partition(".")[2])
    scaled = value * 100 if unit in ("%", " points") else value
    return round(scaled, decimals) == float(number.replace(",", ""))


@pytest.mark.parametrize("figure, record, key", figure_sources())
def test_each_listed_figure_is_what_its_record_says(figure, record, key):
    value = value_at(json.loads((ROOT / record).read_text(encoding="utf-8")), key)
    assert matches(figure, value), f"{figure}: {record} has {value} at {key}"


def test_every_figure_the_readme_quotes_is_listed_with_its_record():
    text = README.read_text(encoding="utf-8")
    text = text.replace(section(text, "Quick start"), "")  # make demo's own output
    listed = {figure for figure, _, _ in figure_sources()}
    quoted = {number + unit for number, unit in FIGURE.findall(text)}
    assert quoted, "the README quotes no figure"
    assert quoted <= listed, f"figures without a record: {sorted(quoted - listed)}"
    for figure in listed:
        assert re.search(rf"(?<![\w.]){re.escape(figure)}(?![\d])", text), f"{figure} not quoted"


def test_a_figure_that_disagrees_with_its_record_is_caught():
    assert matches("67.15%", 0.6715) and matches("2,002 faces/s", 2002.0)
    assert not matches("67.16%", 0.6715) and not matches("0.65 points", 0.006426)
    assert matches("60", 60) and not matches("61", 60)

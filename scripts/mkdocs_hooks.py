"""MkDocs hooks for ferlab's documentation site (``mkdocs.yml`` names this file).

- Pages that another part of the project may add (:data:`OPTIONAL`) are listed in the nav; such an
  entry whose page is absent is dropped rather than failing the strict build (any other missing
  page still fails it).
- ``<!-- include PATH -->`` on a line of its own is replaced by the file at PATH (relative to the
  repository), so the model card has one source: ``src/ferlab/assets/MODEL_CARD.md``, written by
  the release tooling with the shipped model.
- ``<!-- records -->`` is replaced by a table of every benchmark record under
  ``benchmarks/results/`` with the command the record says wrote it, so a new record is listed
  without editing the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"^<!-- include (\S+) -->$", re.M)
OPTIONAL = frozenset({"photos.md", "collection.md"})
RECORDS = ROOT / "benchmarks" / "results"
LONGEST_COMMAND = 160  # characters of a record's command shown in the table


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: pipes escaped, cut to a readable length."""
    text = " ".join(text.split())
    if len(text) > LONGEST_COMMAND:
        text = text[: LONGEST_COMMAND - 3] + "..."
    return text.replace("|", "\\|")


def records_table() -> str:
    """A Markdown table: each JSON record in ``benchmarks/results/`` and its ``command``."""
    lines = ["| record | command |", "|---|---|"]
    for path in sorted(RECORDS.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        command = record.get("command") if isinstance(record, dict) else None
        if isinstance(command, str):
            shown = f"`{_cell(command)}`"
        elif isinstance(record, dict):
            shown = "(no command recorded; its parts: " + _cell(", ".join(record)) + ")"
        else:
            shown = "(not a JSON table)"
        lines.append(f"| `{path.name}` | {shown} |")
    return "\n".join(lines)


def _present(nav: list, docs: Path) -> list:
    """``nav`` without the :data:`OPTIONAL` pages that are not in ``docs``; empty sections go."""
    kept = []
    for entry in nav:
        title, target = next(iter(entry.items())) if isinstance(entry, dict) else (None, entry)
        if isinstance(target, list):
            target = _present(target, docs)
            if target:
                kept.append({title: target})
        elif str(target) not in OPTIONAL or (docs / target).is_file():
            kept.append(entry)
    return kept


def on_config(config):
    if config.nav:
        config.nav = _present(config.nav, Path(config.docs_dir))
    return config


def on_page_markdown(markdown: str, page, config, files) -> str:
    def included(match: re.Match) -> str:
        path = ROOT / match.group(1)
        if not path.is_file():
            raise PluginError(f"{page.file.src_path}: included file {path} is missing")
        return path.read_text(encoding="utf-8").strip()

    markdown = INCLUDE.sub(included, markdown)
    return markdown.replace("<!-- records -->", records_table())

"""Write the documentation's configuration reference from the settings schema.

    python scripts/config_reference.py           # rewrites docs/reference/configuration.md
    python scripts/config_reference.py --check   # exit 1 if the committed page is out of date

Every table is read from the pydantic models themselves (``ferlab.settings`` and the SPACE file's
models in ``ferlab.search.space``): each key, its type, default, range or choices, the checks its
validators make and its description, so the page cannot drift from what ferlab accepts
(``tests/test_docs.py`` runs ``--check``'s comparison).
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel

from ferlab.search.space import RANGE_TYPES, GroupSpec, SearchOptions
from ferlab.settings import BaselineSettings, CNNSettings, ExtendSettings, TrainSettings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "configuration.md"

# (title, command that reads it, schema): the config kinds, in the order the page gives them.
KINDS: list[tuple[str, str, type[BaseModel]]] = [
    ("Fully connected training", "ferlab train CONFIG", TrainSettings),
    ("CNN training", "ferlab cnn train CONFIG", CNNSettings),
    ("scikit-learn baselines", "ferlab compare CONFIG_A CONFIG_B", BaselineSettings),
]

INTRO = """\
# Configuration reference

This page is generated from the settings schema by `scripts/config_reference.py`
(`tests/test_docs.py` fails when it is out of date). Every config file is TOML; every key is
optional and takes the default shown. A config is checked against its schema when it is read,
before any data loads: an unknown key (with a "did you mean"), a wrong type (no silent `"16"` to
16 or `32.9` to 32), a non-finite number, or a value out of range or not among the choices is one
line naming the key, the rule and the value. `--set key=value` overrides one key (the value is
read as TOML). Annotated examples of whole configs are on the [training](../training.md) and
[CNN](../cnn.md) pages.
"""


def _words(decorator: Any) -> str:
    """A validator as words: its docstring's first line, else its name (``_known_dataset`` ->
    ``known dataset``)."""
    doc = (getattr(decorator.func, "__doc__", None) or "").strip()
    if doc:
        return doc.splitlines()[0].rstrip(".").replace("``", "`")
    return decorator.cls_var_name.strip("_").replace("_", " ")


def _literal(value: Any) -> str:
    """A value as it is written in TOML (``none`` for an unset optional key)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list | tuple):
        return "`[" + ", ".join(_literal(v).strip("`") for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def _bounds(metadata: list) -> list[str]:
    """Range rules of a field's constraint metadata (``Ge(ge=0)`` -> ``>= 0``)."""
    rules = []
    for item in metadata:
        for cls, attr, sign in (
            (annotated_types.Ge, "ge", ">="),
            (annotated_types.Gt, "gt", ">"),
            (annotated_types.Le, "le", "<="),
            (annotated_types.Lt, "lt", "<"),
        ):
            if isinstance(item, cls):
                rules.append(f"{sign} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MinLen):
            rules.append(f"at least {item.min_length} item{'s' if item.min_length > 1 else ''}")
        if hasattr(item, "metadata"):  # a FieldInfo inside Annotated[...]
            rules += _bounds(item.metadata)
    return rules


def _type(annotation: Any) -> tuple[str, list[str]]:
    """A type's name for the table and the range rules it carries."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        name, rules = _type(args[0])
        return name, rules + _bounds(list(args[1:]))
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args), []
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        name = " or ".join(p[0] for p in parts)
        rules = [r for p in parts for r in p[1]]
        return name, rules
    if origin is list:
        inner, rules = _type(args[0]) if args else ("any", [])
        return f"list of {inner}", [f"each {r}" for r in rules]
    if origin is dict:
        return "table", []
    if annotation is Any:
        return "any", []
    return getattr(annotation, "__name__", str(annotation)), []


def _validators(schema: type[BaseModel]) -> tuple[dict[str, list[str]], list[str]]:
    """Field validators by field name and the model-wide checks, as words."""
    decorators = schema.__pydantic_decorators__
    fields: dict[str, list[str]] = {}
    for decorator in decorators.field_validators.values():
        for field in decorator.info.fields:
            fields.setdefault(field, []).append(_words(decorator))
    checks = [_words(d) for d in decorators.model_validators.values()]
    return fields, checks


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def rows(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """One Markdown table row per key of ``schema``, sub-tables flattened to dotted keys."""
    out = []
    checked, _ = _validators(schema)
    for name, field in schema.model_fields.items():
        if _is_section(field.annotation):
            out += rows(field.annotation, f"{prefix}{name}.")
            continue
        kind, rules = _type(field.annotation)
        rules = _bounds(field.metadata) + rules + checked.get(name, [])
        default = field.default_factory() if field.default_factory else field.default
        default = "required" if field.is_required() else _literal(default)
        cells = [f"`{prefix}{name}`", kind, default, "; ".join(rules), field.description or ""]
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return out


def checks(schema: type[BaseModel]) -> list[str]:
    """The model-wide checks of ``schema`` and of its sub-tables, as words."""
    found = list(_validators(schema)[1])
    for field in schema.model_fields.values():
        if _is_section(field.annotation):
            found += checks(field.annotation)
    return found


HEADER = ["| key | type | default | rule | description |", "|---|---|---|---|---|"]


def table(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """A schema's table, with the checks that span several keys below it."""
    lines = HEADER + rows(schema, prefix)
    spanning = checks(schema)
    if spanning:
        lines += ["", "Checks across keys: " + "; ".join(spanning) + "."]
    return lines


def _doc(schema: type[BaseModel]) -> str:
    """The first docstring along ``schema``'s bases below ``Section``, on one line."""
    for cls in schema.__mro__:
        if cls.__name__ in ("Section", "BaseModel"):
            break
        if cls.__doc__:
            return " ".join(cls.__doc__.split()).replace("``", "`")
    return ""


def page() -> str:
    """The whole reference page, as Markdown."""
    parts = [INTRO]
    for title, command, schema in KINDS:
        parts.append(
            f"## {title}\n\n`{command}` reads this schema (`{schema.__name__}`). {_doc(schema)}\n"
        )
        parts.append("\n".join(table(schema)) + "\n")
    parts.append(
        "## Search spaces\n\n"
        "`ferlab search random|tpe|sequential SPACE` reads a SPACE file: `[config]` holds the fixed "
        "training settings (a fully connected training config, above), each "
        '`[params."section.key"]` a range over one of its keys, each `[sequential.<group>]` a step '
        "of a sequential search, and `[search]` the search's own options.\n"
    )
    parts.append("### `[search]`\n\n" + "\n".join(table(SearchOptions)) + "\n")
    for kind, spec in RANGE_TYPES.items():
        lines = [r for r in rows(spec) if not r.startswith("| `type`")]
        spanning = checks(spec)
        note = ["", "Checks across keys: " + "; ".join(spanning) + "."] if spanning else []
        doc = f"{_doc(spec)}\n\n" if _doc(spec) else ""
        parts.append(
            f'### `[params."section.key"]` with `type = "{kind}"`\n\n'
            + doc
            + "\n".join(HEADER + lines + note)
            + "\n"
        )
    parts.append("### `[sequential.<group>]`\n\n" + "\n".join(table(GroupSpec)) + "\n")
    parts.append(
        "## `ferlab extend` options\n\n"
        f"{_doc(ExtendSettings)} Each key is the option of that name (`lr` is `--lr`), checked "
        "against this schema.\n"
    )
    parts.append("\n".join(table(ExtendSettings)) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the committed page")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

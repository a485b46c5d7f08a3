"""The configs that ship inside ferlab, reachable by name from every config-driven command.

One convention for ``train``, ``cnn train``, ``compare`` and ``search``: a CONFIG (or SPACE)
argument that is an existing file is read as that file; otherwise, without a ``.toml`` suffix, it
names a shipped config by its path in this folder without the suffix: ``digits_fc``,
``fer2013_cnn_cpu``, ``spaces/digits_demo``, ``baselines/random_forest``. ``ferlab configs``
lists them, ``ferlab configs show NAME`` prints one and ``ferlab configs copy NAME`` copies one
to edit.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ferlab.errors import ConfigError

SUFFIX = ".toml"


@dataclass(frozen=True)
class ShippedConfig:
    """A shipped config: its ``name`` (as commands take it), ``path`` and first comment line."""

    name: str
    path: Path
    summary: str


def configs_dir() -> Path:
    """The folder of the shipped configs inside the installed package."""
    return Path(str(resources.files(__name__)))


def _summary(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def shipped_configs() -> list[ShippedConfig]:
    """Every shipped config, sorted by name (top-level configs first, then sub-folders)."""
    root = configs_dir()
    found = [
        ShippedConfig(path.relative_to(root).with_suffix("").as_posix(), path, _summary(path))
        for path in root.rglob(f"*{SUFFIX}")
    ]
    return sorted(found, key=lambda c: ("/" in c.name, c.name))


def shipped_config(name: str) -> Path:
    """The path of the shipped config called ``name`` (e.g. ``digits_fc``, ``spaces/digits_demo``).

    Raises :class:`~ferlab.errors.ConfigError` naming the closest choices when there is none.
    """
    root = configs_dir()
    candidate = (root / f"{name}{SUFFIX}").resolve()
    if name and candidate.is_file() and candidate.is_relative_to(root.resolve()):
        return candidate
    names = [c.name for c in shipped_configs()]
    close = [n for n in names if name and (name in n or n.endswith(f"/{name}"))][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"{name}: no such config file or shipped config{hint} (`ferlab configs` lists them)"
    )


def resolve_config(path_or_name: str | Path) -> Path:
    """``path_or_name`` as a config file: an existing file or a ``.toml`` path as given, else the
    shipped config of that name (see the module's docstring for the convention)."""
    path = Path(path_or_name).expanduser()
    if path.is_file() or path.suffix == SUFFIX:
        return path
    return shipped_config(str(path_or_name))


def copy_config(name: str, dest: str | Path | None = None, *, force: bool = False) -> Path:
    """Copy the shipped config ``name`` to ``dest`` (a file, or a folder to copy it into; default:
    ``NAME.toml`` in the working folder) and return the written path. An existing file is refused
    unless ``force``."""
    source = shipped_config(name)
    target = Path(dest).expanduser() if dest is not None else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; use --force to replace it")
    if not target.parent.is_dir():
        raise ConfigError(f"{target.parent}: no such folder")
    shutil.copyfile(source, target)
    return target

"""Which extra installs each library that only part of ferlab needs, and the one-line message
that names it when a command finds the library missing.

The base install (``pip install ferlab``) runs ``predict``, ``EmotionRecognizer`` and ``serve``.
``tests/test_dependencies.py`` holds this table to ``pyproject.toml``'s extras.
"""

from __future__ import annotations

# Top-level module -> the extra of ferlab that installs it.
EXTRA_OF_MODULE: dict[str, str] = {
    "matplotlib": "lab",
    "tqdm": "lab",
    "sklearn": "lab",
    "scipy": "lab",
    "optuna": "lab",
    "sqlalchemy": "lab",
    "dask": "lab",
    "distributed": "lab",
    "pyarrow": "lab",
    "torch": "deep",
    "safetensors": "deep",
    "dask_jobqueue": "cluster",
    "psycopg2": "cluster",
    "optuna_dashboard": "cluster",
    "skimage": "dev",
}
# What each extra adds, as the message says it.
PURPOSE = {
    "lab": "train, evaluate, compare, extend, search, analyse",
    "deep": "PyTorch; its CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu",
    "cluster": "cluster searches, PostgreSQL, the dashboard",
    "dev": "tests and demo photos",
}


def extra_for(module: str | None) -> str | None:
    """The extra that installs the top-level package of ``module`` (a dotted name), if any."""
    if not module:
        return None
    return EXTRA_OF_MODULE.get(module.split(".")[0])


def missing_extra_message(error: ImportError, command: str = "this command") -> str | None:
    """One line naming the extra to install for a failed import, or None when the missing module
    is not one an extra installs (a broken installation, not a missing extra)."""
    module = getattr(error, "name", None)
    extra = extra_for(module)
    if extra is None:
        return None
    return (
        f"{command} needs {module.split('.')[0]}: pip install 'ferlab[{extra}]' "
        f"(the {extra} extra: {PURPOSE[extra]})"
    )

"""ferlab's modules form no import cycle and import only downwards, through a declared order of
layers, counting imports inside functions too."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The ferlab modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in modules}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    files = {module_name(p): p for p in (SRC / "ferlab").rglob("*.py")}
    graph = {name: imports_of(path, set(files)) - {name} for name, path in files.items()}
    # A package's __init__ is imported on the way to any of its modules: not an edge back.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# The layers, lowest first: a module may import its own layer and those below, never above.
# Each name is a module or package of ferlab, without the "ferlab." prefix; a module belongs to the
# longest name that contains it ("inference.models" before "inference"; "ferlab" is the root
# package's lazy API). A package whose modules sit in several layers imports none of them.
LAYERS = [
    # foundation: errors, what every layer uses (the atomic writer, array files, progress, extras,
    # plots), the model record, the report's measures and calibration, assets, shipped configs
    ("errors", "common", "modelfile", "evaluation.metrics", "evaluation.calibration", "assets",
     "configs", "inference", "evaluation"),
    ("nn",),  # the NumPy engine, with its own settings type
    ("data",),  # readers, cache, splits
    ("settings",),  # the settings package: schema, loading config files, the CNN's config
    ("runs",),  # a training run's folder, shared by every kind of training; the fully connected run
    ("deep", "inference.onnx_model"),  # the CNN: training, model files, export; ONNX models
    ("inference.models",),  # load_model over every model file kind
    # faces in photos, predicting folders, scoring a model on its split, searching
    ("vision", "inference.predict", "evaluation.scoring", "search"),
    # commands built on the above
    ("compare", "runs.extend", "inference.versions", "collection", "photos"),
    ("serve", "cli", "ferlab", "inference.compat"),  # entry points
]  # fmt: skip
# Imports from a lower layer to a higher one that the tree still holds, each named as
# "importer -> imported" (module names): to be emptied, never added to.
KNOWN_UPWARD_IMPORTS: set[str] = set()


def unit_of(module: str) -> str:
    """The declared layer name ``module`` belongs to: the longest that contains it."""
    name = module.removeprefix("ferlab.") if module != "ferlab" else "ferlab"
    declared = {n for layer in LAYERS for n in layer}
    while name not in declared and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def test_every_module_sits_in_one_declared_layer():
    names = [name for layer in LAYERS for name in layer]
    assert len(names) == len(set(names))
    units = {unit_of(module_name(p)) for p in (SRC / "ferlab").rglob("*.py")}
    missing = sorted(units - set(names))
    assert not missing, f"place {', '.join(missing)} in tests/test_layering.py's LAYERS"


def test_imports_point_down_the_layers():
    level = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    files = {module_name(p): p for p in (SRC / "ferlab").rglob("*.py")}
    upward = set()
    for name, path in files.items():
        for imported in imports_of(path, set(files)) - {name}:
            # ``from ferlab import __version__`` reads a constant, not the root's lazy API.
            if imported == "ferlab" or name.startswith(imported + "."):
                continue
            if level.get(unit_of(imported), 0) > level.get(unit_of(name), 0):
                upward.add(f"{name} -> {imported}")
    assert sorted(upward - KNOWN_UPWARD_IMPORTS) == [], "imports from a lower layer upwards"
    assert sorted(KNOWN_UPWARD_IMPORTS - upward) == [], "gone: remove from KNOWN_UPWARD_IMPORTS"


def test_the_development_page_names_every_package():
    page = (SRC.parent / "docs" / "development.md").read_text(encoding="utf-8")
    packages = sorted(p.parent.name for p in (SRC / "ferlab").glob("*/__init__.py"))
    missing = [name for name in packages if f"| `{name}/` |" not in page]
    assert not missing, f"docs/development.md's 'Where things live' lacks {', '.join(missing)}"
    modules = sorted(p.name for p in (SRC / "ferlab").glob("*.py") if p.name != "__init__.py")
    assert modules == ["errors.py"], "a module at the top of src/ferlab: give it a package"

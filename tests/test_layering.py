"""The package's imports point only down its layers, so that each layer can be read, tested and
changed without the ones above it:

    cli -> object_detector -> config -> training -> evaluation, export -> diagnostics
        -> inference -> data -> model -> anchors -> label_map -> backends -> output_files
        -> errors

A module may import its own package (`data.pipeline` imports `data.sources`) and any lower layer;
never a higher layer or another package of its own layer. `python -m pytest tests/test_layering.py`
lists every import that breaks the rule.
"""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "efficientdet_tf"

LAYERS = [
    {"cli"},
    {"object_detector"},
    {"config"},
    {"training"},
    {"evaluation", "export"},
    {"diagnostics"},
    {"inference"},
    {"data"},
    {"model"},
    {"anchors"},
    {"label_map"},
    {"backends"},
    {"output_files"},
    {"errors"},
]
RANK = {part: len(LAYERS) - index for index, parts in enumerate(LAYERS) for part in parts}
ENTRY_POINTS = {"__init__", "__main__"}


def part_of(module: str) -> str:
    """'efficientdet_tf.data.pipeline' -> 'data'."""
    return module.split(".")[1]


def package_imports(path: Path):
    """(line, imported module) of every efficientdet_tf import in a file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("efficientdet_tf."):
                yield node.lineno, name


def test_every_package_part_has_a_layer():
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if path.suffix == ".py" or (path / "__init__.py").is_file()}
    assert parts - ENTRY_POINTS == set(RANK)


def test_imports_point_only_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if len(module.split(".")) == 1 or part_of(module) in ENTRY_POINTS:
            continue
        importer = part_of(module)
        for line, imported in package_imports(path):
            target = part_of(imported)
            if target != importer and RANK[target] >= RANK[importer]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


# Reading Keras's backend name: `keras.backend.backend()` (or `K.backend()`, `backend()` once
# imported) and `keras.backend.backend` passed around; in code, docstrings or comments alike.
ASKING_THE_KERAS_BACKEND = re.compile(r"\bbackend\s*\(\s*\)|keras\s*\.\s*backend\s*\.\s*backend\b")


def test_only_the_backends_package_asks_which_keras_backend_runs():
    asking = [str(path.relative_to(PACKAGE.parent)) for path in sorted(PACKAGE.rglob("*.py"))
              if path.relative_to(PACKAGE).parts[0] != "backends"
              and ASKING_THE_KERAS_BACKEND.search(path.read_text())]
    assert not asking, ("modules that ask Keras which backend runs (call a method of "
                        "`backends.current()` instead):\n" + "\n".join(asking))

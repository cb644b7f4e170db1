"""Import boundaries of DESIGN.md: the maths imports no Lightning, and the callbacks import no heavy optional library.

``import lightning`` itself loads torchvision and transformers (through torchmetrics), so the callbacks' rule is
checked on our own code: no module that ``agoplight.callbacks`` reaches imports them at module level.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agoplight"


def _module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    for candidate in (PACKAGE.joinpath(*parts, "__init__.py"), PACKAGE.joinpath(*parts).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported by statements at module level (not inside functions, where imports are deliberately lazy)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _reachable(root: str) -> dict[str, set[str]]:
    """Our modules reachable from ``root`` by module-level imports, each with the outside modules it imports."""
    seen, todo = {}, [root]
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if name in seen or path is None:
            continue
        imports = _top_level_imports(path)
        seen[name] = {i for i in imports if not i.startswith("agoplight")}
        todo.extend(i for i in imports if i.startswith("agoplight"))
        parents = name.split(".")
        todo.extend(".".join(parents[:i]) for i in range(1, len(parents)))
    return seen


@pytest.mark.parametrize("root", ["agoplight.callbacks", "agoplight.features"])
def test_no_heavy_optional_library_at_module_level(root):
    reached = _reachable(root)
    assert f"{root}.agop" in reached or f"{root}.agop_monitor" in reached  # the walk found the package's modules
    banned = ("wandb", "transformers", "torchvision")
    offenders = {module: sorted(i for i in imports if i.split(".")[0] in banned) for module, imports in reached.items()}
    assert not {module: found for module, found in offenders.items() if found}


def test_features_import_no_lightning_at_all():
    reached = _reachable("agoplight.features")
    assert not {
        m: i for m, i in reached.items() if any(x.split(".")[0] in ("lightning", "pytorch_lightning") for x in i)
    }
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, agoplight.features; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = {"lightning", "torchmetrics", "wandb", "transformers", "torchvision"}
    assert not heavy & {name.split(".")[0] for name in loaded}

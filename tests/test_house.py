"""The house rules of docs/ARCHITECTURE.md that imports can show: stages import earlier stages only, ``core/``
imports no stage and neither Beam nor torch, package ``__init__`` files import nothing, each stage has the
same parts. Read from the source (AST), so a rule broken inside a function body is found too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("queries", "pairs", "download", "finalize")  # in the order data flows
PARTS = ("__init__.py", "options.py", "inputs.py", "pipeline.py", "command.py")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``), at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "wit_builder" and parts[1] in STAGES else None


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_earlier_stages_only(stage):
    allowed = set(STAGES[: STAGES.index(stage) + 1])
    wrong = {f"{path.relative_to(ROOT)} -> {module}"
             for path in _modules(f"wit_builder/{stage}") for module in _imports(path)
             if _stage_of(module) not in (None, *allowed) or module.startswith(("trainer", "wit_builder.demo",
                                                                                 "wit_builder.cli"))}
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_the_same_parts_and_only_its_pipeline_imports_beam(stage):
    folder = ROOT / "wit_builder" / stage
    assert all((folder / part).is_file() for part in PARTS), [p for p in PARTS if not (folder / p).is_file()]
    with_beam = {path.name for path in _modules(f"wit_builder/{stage}")
                 if any(m == "apache_beam" or m.startswith("apache_beam.") for m in _imports(path))}
    assert with_beam == {"pipeline.py"}


def test_core_imports_no_stage_no_beam_no_torch():
    wrong = {f"{path.relative_to(ROOT)} -> {module}" for path in _modules("wit_builder/core")
             for module in _imports(path)
             if module.split(".")[0] in ("apache_beam", "torch", "trainer")
             or (module.startswith("wit_builder.") and module.split(".")[1] not in ("core",))}
    assert not wrong, sorted(wrong)


def test_beam_plumbing_imports_no_stage():
    wrong = {f"{path.relative_to(ROOT)} -> {module}" for path in _modules("wit_builder/beam")
             for module in _imports(path)
             if module.startswith("wit_builder.") and module.split(".")[1] not in ("core", "beam")}
    assert not wrong, sorted(wrong)


def test_the_trainer_imports_no_beam_and_no_stage():
    wrong = {f"{path.relative_to(ROOT)} -> {module}" for path in _modules("trainer") for module in _imports(path)
             if module.split(".")[0] == "apache_beam"
             or (module.startswith("wit_builder.") and module.split(".")[1] != "core")}
    assert not wrong, sorted(wrong)


def test_package_inits_are_docstrings_only():
    """Beam pickles DoFns by module path: a worker must import a stage's pipeline.py and no more."""
    inits = [p for folder in ("wit_builder", "trainer", "schemas") for p in _modules(folder) if p.name == "__init__.py"]
    busy = [str(p.relative_to(ROOT)) for p in inits
            if any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in ast.parse(
                p.read_text(encoding="utf-8")).body)]
    assert not busy, busy
    assert all(ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) for p in inits if "tests" not in p.parts)


def test_the_rules_catch_a_later_stage_import(tmp_path):
    """The checks above can fail: a module importing a later stage is seen, also inside a function."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from wit_builder.finalize import rules\n    import apache_beam as beam\n")
    assert {"wit_builder.finalize.rules", "apache_beam"} <= _imports(module)
    assert _stage_of("wit_builder.finalize.rules") == "finalize" and _stage_of("wit_builder.core.uid") is None

"""The import rules of docs/architecture.md, checked on the source without importing it.

Every module under src/diffeoprobe is parsed with :mod:`ast`; every import it makes, wherever it
stands (module level, inside a function, under ``if TYPE_CHECKING:``), relative or absolute, and
every ``importlib.import_module("...")`` with a literal name, is resolved to an absolute module
name and checked against :data:`RULES`. A failure names the rule, the importing module, its file
and line, and what it imported.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "diffeoprobe"


@dataclass(frozen=True)
class Rule:
    """``importers`` never import ``forbidden``, unless they are one of ``allowed``.

    Patterns: ``"diffeoprobe.x"`` is that module and everything inside it (``diffeoprobe.x.y``);
    a pattern with ``*`` is a glob on the dotted name (``"diffeoprobe.cli*"`` also matches
    ``diffeoprobe.cli_sweep``).
    """

    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()


MATHS = (
    "diffeoprobe.perturb",
    "diffeoprobe.measurement",
    "diffeoprobe.theory",
    "diffeoprobe.probes",
    "diffeoprobe.models",
    "diffeoprobe.data",
)

# The one table of rules (docs/architecture.md, "Imports that must never exist").
RULES: dict[str, Rule] = {
    "the maths and the data stay pure": Rule(
        importers=MATHS,
        forbidden=(
            "diffeoprobe.cli*",
            "diffeoprobe.sweep*",
            "diffeoprobe.experiments*",
            "diffeoprobe.training",
            "diffeoprobe.ensemble",
            "diffeoprobe.runs",
        ),
    ),
    "the run machinery does not know the papers' experiments": Rule(
        importers=(
            "diffeoprobe.config",
            "diffeoprobe.atomic",
            "diffeoprobe.runs",
            "diffeoprobe.training",
            "diffeoprobe.ensemble",
            "diffeoprobe.sweep*",
        ),
        forbidden=("diffeoprobe.experiments*",),
    ),
    "only the command line imports the command line": Rule(
        importers=("diffeoprobe*",),
        forbidden=("diffeoprobe.cli*",),
        allowed=("diffeoprobe.cli*", "diffeoprobe.__main__"),
    ),
}

# Known violations, each with its reason (none today). A listed exception that no longer occurs
# fails the test, so the list only shrinks.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def matches(module: str, pattern: str) -> bool:
    """Whether ``module`` falls under ``pattern`` (see :class:`Rule`).

    >>> matches("diffeoprobe.cli_sweep", "diffeoprobe.cli*")
    True
    >>> matches("diffeoprobe.runs.x", "diffeoprobe.runs"), matches("diffeoprobe.runsx", "diffeoprobe.runs")
    (True, False)
    """
    if "*" in pattern:
        return fnmatch.fnmatchcase(module, pattern)
    return module == pattern or module.startswith(pattern + ".")


@dataclass(frozen=True)
class Import:
    """One import: the importing module, where it stands, and the module it names."""

    module: str
    path: Path
    line: int
    imported: str
    src: Path = SRC

    def where(self) -> str:
        """``src/diffeoprobe/x.py:12``: the file from the source folder's parent, and the line."""
        return f"{self.path.relative_to(self.src.parent)}:{self.line}"


def module_name(path: Path, src: Path = SRC) -> tuple[str, bool]:
    """The dotted name of a source file, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``.

    >>> resolve_relative("diffeoprobe.data.cifar", False, 1, "download")
    'diffeoprobe.data.download'
    >>> resolve_relative("diffeoprobe.models", True, 2, "runs")
    'diffeoprobe.runs'
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(
    source: str, module: str, is_package: bool, path: Path, src: Path = SRC
) -> Iterator[Import]:
    """Every module ``source`` imports, by absolute name.

    ``from X import y`` yields ``X`` and ``X.y`` (``y`` may be a submodule: ``from diffeoprobe
    import runs``); ``importlib.import_module("X")`` and ``__import__("X")`` with a literal name
    yield ``X``.
    """
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, path, node.lineno, alias.name, src)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = resolve_relative(module, is_package, node.level, node.module)
            else:
                base = node.module or ""
            yield Import(module, path, node.lineno, base, src)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(module, path, node.lineno, f"{base}.{alias.name}", src)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            if node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
                    yield Import(module, path, node.lineno, node.args[0].value, src)


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def package_modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package ``__init__``)."""
    return {
        module_name(path, src)[0]: (path, module_name(path, src)[1])
        for path in sorted((src / PACKAGE).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def all_imports(src: Path = SRC) -> list[Import]:
    """The imports of every module of the package."""
    out = []
    for module, (path, is_package) in package_modules(src).items():
        out += imports_of(path.read_text(encoding="utf-8"), module, is_package, path, src)
    return out


def violations(imports: list[Import]) -> list[tuple[str, Import]]:
    """``(rule, import)`` for every import that breaks a rule, one per module, line and target."""
    found: dict[tuple[str, str, int, str], tuple[str, Import]] = {}
    for imp in imports:
        for name, rule in RULES.items():
            if not any(matches(imp.module, p) for p in rule.importers):
                continue
            if any(matches(imp.module, p) for p in rule.allowed):
                continue
            hit = next((p for p in rule.forbidden if matches(imp.imported, p)), None)
            if hit is None:
                continue
            # "from diffeoprobe.runs import x" names diffeoprobe.runs and diffeoprobe.runs.x:
            # report the module, once
            target = _forbidden_module(imp.imported, hit)
            found.setdefault((name, imp.module, imp.line, target), (name, _with(imp, target)))
    return list(found.values())


def _forbidden_module(imported: str, pattern: str) -> str:
    """The shortest prefix of ``imported`` that still matches ``pattern``."""
    parts = imported.split(".")
    for end in range(1, len(parts) + 1):
        if matches(".".join(parts[:end]), pattern):
            return ".".join(parts[:end])
    return imported


def _with(imp: Import, imported: str) -> Import:
    return Import(imp.module, imp.path, imp.line, imported, imp.src)


def test_the_rules_apply_to_modules_that_exist() -> None:
    """A renamed package would make a rule check nothing: every importer pattern matches."""
    modules = package_modules()
    for name, rule in RULES.items():
        for pattern in rule.importers:
            assert any(matches(m, pattern) for m in modules), f"{name}: no module is {pattern}"
    assert len({imp.module for imp in all_imports()}) > 50  # the scan reads the whole package


def test_no_module_imports_what_the_architecture_forbids() -> None:
    broken = [
        f"{imp.where()}: {imp.module} imports {imp.imported} ({rule})"
        for rule, imp in violations(all_imports())
        if (imp.module, imp.imported) not in KNOWN_EXCEPTIONS
    ]
    assert not broken, "imports that break docs/architecture.md:\n" + "\n".join(sorted(broken))


def test_every_known_exception_still_occurs() -> None:
    """Once a known exception is fixed, it leaves the list (which then guards the fix)."""
    occurring = {(imp.module, imp.imported) for _, imp in violations(all_imports())}
    assert not KNOWN_EXCEPTIONS - occurring, KNOWN_EXCEPTIONS - occurring


# ---- the checker itself, on a small package written for the test ------------------------------

FAKE = {
    "diffeoprobe/__init__.py": "",
    "diffeoprobe/__main__.py": "from diffeoprobe.cli import main\n",
    "diffeoprobe/cli/__init__.py": "from . import measure\nfrom diffeoprobe import sweep\n",
    "diffeoprobe/cli/measure.py": "from ..measurement import core\n",
    "diffeoprobe/measurement/__init__.py": "from .core import measure\n",
    "diffeoprobe/measurement/core.py": (
        "import torch\n"
        "def f():\n"
        "    from ..runs import save  # inside a function, relative\n"
        "    return save\n"
    ),
    "diffeoprobe/perturb/__init__.py": "from diffeoprobe import cli_sweep\n",
    "diffeoprobe/models/__init__.py": (
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import diffeoprobe.sweep.grid\n"
        "def g():\n"
        "    return importlib.import_module('diffeoprobe.experiments.driver')\n"
    ),
    "diffeoprobe/report.py": "import diffeoprobe.cli.measure as m\n",
    "diffeoprobe/theory.py": "from diffeoprobe.runsheet import x  # only a similar name\n",
    "diffeoprobe/sweep/driver.py": "from diffeoprobe.experiments import presets\n",
}


@pytest.fixture
def fake_src(tmp_path: Path) -> Path:
    for name, text in FAKE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checker_finds_each_kind_of_forbidden_import(fake_src: Path) -> None:
    found = {(imp.module, imp.line, imp.imported) for _, imp in violations(all_imports(fake_src))}
    assert found == {
        ("diffeoprobe.measurement.core", 3, "diffeoprobe.runs"),  # relative, inside a function
        ("diffeoprobe.perturb", 1, "diffeoprobe.cli_sweep"),  # both rules, reported per rule
        ("diffeoprobe.models", 4, "diffeoprobe.sweep"),  # under TYPE_CHECKING
        ("diffeoprobe.models", 6, "diffeoprobe.experiments"),  # importlib with a literal
        ("diffeoprobe.report", 1, "diffeoprobe.cli"),  # only cli* and __main__ import cli
        ("diffeoprobe.sweep.driver", 1, "diffeoprobe.experiments"),  # run machinery
    }


def test_a_failure_names_the_rule_the_module_and_the_line(fake_src: Path) -> None:
    by_module = {}
    for rule, imp in violations(all_imports(fake_src)):
        by_module.setdefault(imp.module, []).append((rule, imp.where()))
    assert sorted(rule for rule, _ in by_module["diffeoprobe.perturb"]) == sorted(
        r for r in RULES if "experiments" not in r
    )  # both rules that bind the maths, one line each
    assert by_module["diffeoprobe.measurement.core"] == [
        (next(iter(RULES)), f"{fake_src.name}/diffeoprobe/measurement/core.py:3")
    ]


def test_every_public_module_declares_its_names() -> None:
    """``__all__`` in every module whose name does not start with ``_`` (``__init__`` included):
    what a module offers is written down, and star-imports or doc tools see only that."""
    missing = []
    for path in sorted((SRC / "diffeoprobe").rglob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py" or path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        if not any(
            isinstance(node, ast.Assign | ast.AnnAssign)
            and any(
                isinstance(t, ast.Name) and t.id == "__all__"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
            for node in tree.body
        ):
            missing.append(str(path.relative_to(SRC)))
    assert not missing, f"no __all__ in: {', '.join(missing)}"

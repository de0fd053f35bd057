"""Data flows one way: the packages import only what lies upstream of them."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package → packages of the toolkit it must never import
FORBIDDEN = {
    "elmbridge": {"biophys", "elmnet", "surrogate", "benchmarks"},
    "elmnet": {"biophys", "surrogate", "benchmarks"},
    "biophys": {"elmnet", "surrogate", "benchmarks"},
    "surrogate": {"benchmarks"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level package names of every import in a file, lazy imports included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_downstream(package):
    offenders = [
        f"{path.relative_to(REPO)} imports {', '.join(sorted(bad))}"
        for path in sorted((REPO / package).rglob("*.py"))
        if (bad := imported_packages(path) & FORBIDDEN[package])
    ]
    assert not offenders, offenders


def test_the_check_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from biophys import store\n    import surrogate.fit\n")
    assert imported_packages(probe) >= {"biophys", "surrogate"}

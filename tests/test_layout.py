"""The package layout: data flows one way, so the library never imports the tool packages."""

import ast
import re

from .conftest import REPO


def _imported_modules(path) -> set[str]:
    """Every module named by an import statement of a file (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for name in sorted(_imported_modules(path)):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(REPO)} imports {name}")
    return found


def test_library_imports_neither_export_nor_benchmarks():
    assert _offenders("fas_tf", ("export", "benchmarks")) == []


def test_export_imports_only_the_library():
    assert _offenders("export", ("benchmarks",)) == []


def test_the_walk_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from export.convert import convert\n    import benchmarks.x\n")
    assert _imported_modules(module) == {"export.convert", "benchmarks.x"}


def test_the_readme_layout_names_every_package_and_module():
    """README's Layout section (picture and list) names every subpackage and module of fas_tf/,
    and every fas_tf/ or export/ path it names exists."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):text.index("Data licences:")]
    library = REPO / "fas_tf"
    for path in sorted(library.rglob("*.py")):
        if path.name.startswith("_"):
            continue
        where = path.parent.relative_to(library)
        if str(where) != ".":
            assert f"{where}/" in layout, f"fas_tf/{where}/ is not in README's Layout"
        assert path.stem in layout, f"{path.relative_to(REPO)} is not in README's Layout"
    named = set(re.findall(r"\b((?:fas_tf|export)/[\w/]*\w(?:\.py)?)", layout))
    assert all((REPO / n).exists() for n in named), named

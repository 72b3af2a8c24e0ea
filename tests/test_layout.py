"""The package's layout stays as documented: every public name is in the README's API
table, every private module in its package map, and no module imports another's
private names."""

import ast
import re
from pathlib import Path

import jaxflow as jf


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxflow"
SUBPACKAGES = ("models", "losses", "datasets", "metrics", "events", "experiments")


def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _public(module) -> set[str]:
    return {
        name
        for name in vars(module)
        if not name.startswith("_")
        and name not in SUBPACKAGES
        and not isinstance(vars(module)[name], type(jf))
    }


def test_every_public_name_is_in_the_api_table():
    table = _section("API")
    listed = set(re.findall(r"`(?:jf\.)?(?:[a-z]+\.)?([A-Za-z_][A-Za-z0-9_]*)", table))
    for module in (jf, *(getattr(jf, name) for name in SUBPACKAGES)):
        missing = _public(module) - listed - {"annotations"}
        assert not missing, f"{module.__name__}: {sorted(missing)} not in the API table"


def test_every_private_module_is_in_the_package_map():
    table = _section("Package map")
    for path in PACKAGE.glob("_*.py"):
        if path.name != "__init__.py":
            assert f"`{path.name}`" in table or path.name in table, path.name
    assert "`_cli/`" in table


def test_no_private_name_is_imported_from_another_module():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                base = path.parents[node.level - 1]
                if node.module:
                    base = base.joinpath(*node.module.split("."))
                private = {a.name for a in node.names if a.name.startswith("_")}
                modules = {
                    n
                    for n in private
                    if (base / f"{n}.py").exists() or (base / n).is_dir()
                }
                names = private - modules
                assert not names, f"{path.relative_to(ROOT)} imports {sorted(names)}"


def test_all_lists_exactly_the_public_names():
    assert set(jf.__all__) == _public(jf) | set(SUBPACKAGES) - {"annotations"}
    for name in SUBPACKAGES:
        module = getattr(jf, name)
        assert set(module.__all__) == _public(module) - {"annotations"}, name

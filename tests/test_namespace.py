"""One installed namespace (issue 13 item 5): flows/, fusion/ and modalities/ are installed as
biofuse.flows, biofuse.fusion and biofuse.modalities, never as top-level packages that PyPI
distributions of the same names would shadow or be shadowed by."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MOVED = ("flows", "fusion", "modalities")


def test_only_the_biofuse_namespace_is_importable_outside_the_repository(tmp_path: Path) -> None:
    probe = (
        "import importlib, importlib.util, json\n"
        "names = ('flows', 'fusion', 'modalities')\n"
        "top = {n: importlib.util.find_spec(n) is not None for n in names}\n"
        "ours = {n: importlib.import_module('biofuse.' + n).__file__ for n in top}\n"
        "print(json.dumps({'top': top, 'ours': ours}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    import json

    found = json.loads(out.stdout)
    assert found["top"] == {n: False for n in MOVED}, "a top-level package is installed"
    for name, path in found["ours"].items():
        assert Path(path) == REPO / name / "__init__.py"


def test_every_package_folder_is_installed_under_its_namespace() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = set()
    for top in ("biofuse", *MOVED):
        for init in (REPO / top).rglob("__init__.py"):
            dotted = ".".join(init.parent.relative_to(REPO).parts)
            folders.add(dotted if top == "biofuse" else f"biofuse.{dotted}")
    assert listed == folders
    assert config["package-dir"] == {f"biofuse.{n}": n for n in MOVED}


def test_no_code_imports_the_old_top_level_names() -> None:
    old = re.compile(r"^\s*(from|import) (flows|fusion|modalities)\b", re.M)
    offenders = [
        str(p.relative_to(REPO))
        for folder in ("biofuse", *MOVED, "tests", "benchmarks", "scripts")
        for p in (REPO / folder).rglob("*.py")
        if old.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []

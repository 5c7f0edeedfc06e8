"""A user's type checker sees vismem's types: the package ships its `py.typed` marker
(PEP 561), so mypy checks calls into it instead of treating every name as Any."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = """\
from vismem import Memory

memory = Memory.open("pets")
label: str = memory.classify(["query.jpg"])[0].label   # None when it abstains
memory.search(memory.vectors([1])[1], k=3, label=["cat"])   # `labels`
distance: str = memory.search(memory.vectors([1])[1])[0][0].distance
"""


def test_a_users_mypy_sees_the_packages_types(tmp_path):
    """Installed without `py.typed`, `import vismem` was `import-untyped` to a user's mypy and
    every call into it went unchecked."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in packages.get("vismem", []), "the wheel would leave py.typed out"
    # vismem as a user has it: installed in a site-packages (here by a .pth to the source tree)
    venv.create(tmp_path / "env", with_pip=False)
    site = next((tmp_path / "env").glob("lib/python*/site-packages"))
    (site / "vismem.pth").write_text(str(ROOT / "src"))
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(tmp_path / "env" / "bin" / "python"),
         "--config-file", "/dev/null", "--cache-dir", str(tmp_path / "cache"), "--follow-imports", "silent",
         "user.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    found = checked.stdout
    assert "import-untyped" not in found and "py.typed" not in found, found
    assert 'user.py:4: error: Incompatible types in assignment (expression has type "str | None"' in found, found
    assert 'user.py:5: error: Unexpected keyword argument "label" for "search" of "Memory"' in found, found
    assert 'user.py:6: error: Incompatible types in assignment (expression has type "float"' in found, found

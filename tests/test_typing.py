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
memory.classify(["query.jpg"], kk=5)   # `k`
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
    assert 'user.py:7: error: Unexpected keyword argument "kk" for "classify" of "Memory"' in found, found


def test_classify_takes_the_options_of_classify_vectors_by_name():
    """classify took `**options: Any`: a typo passed mypy and failed inside VoteParams
    (`VoteParams.__init__() got an unexpected keyword argument 'kk'`), and an editor
    offered no names."""
    import inspect

    from vismem import Memory

    def options(method):
        return {name: (p.kind, p.default, p.annotation) for name, p in inspect.signature(method).parameters.items()
                if name not in ("self", "images", "vectors", "paths")}

    assert options(Memory.classify) == options(Memory.classify_vectors)


def test_every_error_a_user_can_catch_is_importable_from_the_package():
    """`vismem` exported 8 of the 17 `VismemError` kinds: catching a closed memory, a
    read-only one or a partly done removal meant importing from `vismem.errors`."""
    import vismem
    import vismem.errors

    kinds = {name for name, value in vars(vismem.errors).items()
             if isinstance(value, type) and issubclass(value, vismem.VismemError)}
    assert len(kinds) > 10
    missing = sorted(name for name in kinds if getattr(vismem, name, None) is not getattr(vismem.errors, name))
    assert not missing, f"not exported by vismem: {missing}"
    assert kinds <= set(vismem.__all__)

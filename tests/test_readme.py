"""The README's Python example runs as written, every `vismem` command and option the README
and docs/ show exists, and docs/architecture.md's module map names every module, so the docs
cannot drift from the code."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README lost its Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert "50 added, 0 skipped" in printed
    assert "c0" in printed


def test_readme_starts_with_the_two_setup_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "pip install -e . && vismem demo" in first_block
    assert "python -m pytest" in first_block
    assert text.index(first_block) < 100


def _documented_commands():
    """Every `vismem COMMAND ...` line in the README's and docs/'s shell blocks and indented
    blocks, and every inline `vismem COMMAND ...` in their text, as (file, command, options)."""
    docs = [README, *sorted((README.parent / "docs").glob("*.md"))]
    for path in docs:
        text = path.read_text()
        shell = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.S))
        lines = [line.split("#")[0] for line in shell.splitlines()]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        lines += re.findall(r"`(vismem [^`]*)`", prose) + re.findall(r"^ {4}(vismem .*)$", prose, flags=re.M)
        for line in lines:
            for call in re.findall(r"\bvismem ([a-z][a-z-]*)([^&;]*)", line):
                yield path.name, call[0], re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", call[1])


def test_documented_commands_and_options_exist():
    """A command or option the docs show but the CLI lacks (renamed, removed) fails here."""
    import typer

    from vismem.cli import load_commands

    commands = typer.main.get_command(load_commands()).commands  # type: ignore[attr-defined]
    wrong = []
    seen = 0
    for name, command, options in _documented_commands():
        cli = commands.get(command)
        if cli is None:
            wrong.append(f"{name}: vismem {command}: no such command")
            continue
        seen += 1
        known = {opt for param in cli.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
        wrong += [f"{name}: vismem {command} {option}: no such option" for option in options if option not in known]
    assert seen > 50, "the docs lost their command examples, or this test stopped finding them"
    assert not wrong, "\n".join(wrong)


DOCS = README.parent / "docs"
PACKAGE = README.parent / "src" / "vismem"


def test_architecture_module_map_names_every_module_and_no_other():
    """docs/architecture.md's module map names each module under src/vismem (a package named
    `dir/` covers its files), and every module it names exists."""
    text = (DOCS / "architecture.md").read_text()
    table = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    named = {name for row in re.findall(r"^\| ([^|]+) \|", table, flags=re.M)
             for name in re.findall(r"`([\w/]+(?:\.py|/))`", row)}
    assert len(named) > 40, "the module map lost its rows, or this test stopped reading them"
    missing = sorted(name for name in named if not (PACKAGE / name).exists())
    modules = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")}
    trivial = {"__init__.py", "__main__.py", "search/__init__.py"}  # re-exports and the entry point
    packages = tuple(name for name in named if name.endswith("/"))
    unnamed = sorted(module for module in modules - trivial - named if not module.startswith(packages))
    assert not missing, f"the module map names modules that do not exist: {missing}"
    assert not unnamed, f"the module map leaves out: {unnamed}"

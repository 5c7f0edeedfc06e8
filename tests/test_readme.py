"""The README's Python example, and docs/'s samples over vectors, run as written; every
`vismem` command and option, every HTTP endpoint and page the README and docs/ show exists;
docs/service.md's API table lists the fields each endpoint takes and answers; and
docs/architecture.md's module map names every module. So the docs cannot drift from the code."""

import re
from pathlib import Path

import pytest

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


def test_ci_runs_the_readmes_test_command():
    """.ci/run runs the README's test command, options and all: what the README promises
    (its time, its workers) is what CI checks."""
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    command = re.search(r"(python -m pytest[^#\n]*)", first_block).group(1).strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert re.search(rf"^VISMEM_REQUIRE_MILVUS=1 {re.escape(command)}\b", ci, flags=re.M), (command, ci)


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


def _service_table() -> list[tuple[str, str, str]]:
    """docs/service.md's API table as (METHOD /path, body or query, returns)."""
    text = (DOCS / "service.md").read_text().split("## The API", 1)[1]
    return [(row[0].strip(" `"), row[2], row[3])
            for row in (line.strip(" |").split("|") for line in text.splitlines() if line.startswith("| `"))
            if re.fullmatch(r"`(GET|POST|PATCH|DELETE) /[^`]*`", row[0].strip())]


def _top_level_names(span: str) -> set[str]:
    """The quoted names at the outer level of a JSON-like sketch: `{"a", "b": [{"c"}]}` is {a, b}."""
    names, depth = set(), 0
    for token in re.findall(r'[\[\]{}]|"[a-z_]+"', span):
        if token in "[{":
            depth += 1
        elif token in "]}":
            depth -= 1
        elif depth <= 1 + span.startswith("[{"):
            names.add(token.strip('"'))
    return names


def _normalised(route: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", route)


@pytest.fixture(scope="module")
def openapi(tmp_path_factory):
    from vismem import Memory
    from vismem.service import ServiceSettings, create_app

    with Memory.create(tmp_path_factory.mktemp("docs") / "mem", encoder=None, dim=4) as memory:
        app = create_app(memory, ServiceSettings(token="docs-token"))
        document = app.openapi()
        pages = {_normalised(route.path) for route in app.routes if route.path not in document["paths"]}
    return document, pages


def test_every_endpoint_the_docs_name_is_served(openapi):
    """Each `METHOD /path` in the README and docs/ (`PATCH /items[/{id}]` is both paths), and
    each `/page` they quote, is a route of the app: a renamed or removed one fails here."""
    document, pages = openapi
    served = {f"{method.upper()} {_normalised(route)}" for route, methods in document["paths"].items()
              for method in methods}
    wrong, seen = [], 0
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        text = doc.read_text()
        for method, route in re.findall(r"\b(GET|POST|PATCH|DELETE|PUT) (/[\w{}/.\[\]-]*)", text):
            for each in {route.replace("[", "").replace("]", ""), re.sub(r"\[.*?\]", "", route)}:
                seen += 1
                if f"{method} {_normalised(each)}" not in served:
                    wrong.append(f"{doc.name}: {method} {each}: no such endpoint")
        for page in re.findall(r"`(/[\w/.-]*)[`?]", text):
            if page not in pages and page not in document["paths"]:
                wrong.append(f"{doc.name}: {page}: no such page")
    assert seen > 20, "the docs lost their endpoints, or this test stopped finding them"
    assert not wrong, "\n".join(wrong)


def test_service_api_table_matches_the_openapi_document(openapi):
    """docs/service.md's API table lists every operation the app serves, each with the fields
    it takes, and the fields of the JSON it answers as the OpenAPI document declares them."""
    document, _ = openapi
    schemas = document["components"]["schemas"]

    def resolved(schema: dict) -> dict:
        return schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    def fields(schema: dict) -> set[str]:
        schema = resolved(schema)
        if schema.get("type") == "array":
            return fields(schema["items"])
        return set(schema.get("properties", {})) | {name for part in schema.get("oneOf", []) for name in fields(part)}

    rows = _service_table()
    operations = {f"{method.upper()} {_normalised(path)}": operation
                  for path, methods in document["paths"].items() for method, operation in methods.items()}
    assert {_normalised(route) for route, _, _ in rows} == set(operations)
    wrong = []
    for route, takes, returns in rows:
        operation = operations[_normalised(route)]
        accepted = {name for parameter in operation.get("parameters", []) for name in
                    ({parameter["name"]} | fields(parameter["schema"]))}
        for content in operation.get("requestBody", {}).get("content", {}).values():
            accepted |= fields(content["schema"])
        documented = set(re.findall(r"(?<!default )`\??([a-z][a-z_]*)(?:=[^`]*)?`", takes))
        documented |= {name for name in re.findall(r'"([a-z_]+)"\??[:,}]', takes)}
        wrong += [f"{route}: takes no `{name}`" for name in sorted(documented - accepted)]
        unlisted = accepted - documented - {"item_id", "name", "selector"}  # the path's and the selector model's own
        wrong += [f"{route}: `{name}` not in the table" for name in sorted(unlisted)]
        ok = next((content for status, answer in operation["responses"].items() if status.startswith("2")
                  for content in [answer.get("content", {}).get("application/json")] if content), None)
        declared = fields(ok["schema"]) if ok else set()
        sketches = [span for span in re.findall(r"`([^`]*)`", returns) if span.startswith(("{", "[{"))]
        if declared and sketches:
            answered = set().union(*map(_top_level_names, sketches)) | set(re.findall(r'`"([a-z_]+)"`', returns))
            if answered != declared:
                wrong.append(f"{route}: table says {sorted(answered)}, the app answers {sorted(declared)}")
    assert not wrong, "\n".join(wrong)


def test_classify_json_fields_are_the_ones_the_readme_and_help_name(tmp_path):
    """The README's `classify --json` paragraph names exactly the fields of a real decision and
    of its neighbours, and `vismem classify --help` names each of them too."""
    import numpy as np
    import typer

    from vismem import Memory
    from vismem.cli import load_commands

    with Memory.create(tmp_path / "mem", encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32), ["a", "b", "a", "b"])
        decision = memory.classify_vectors(np.eye(4, dtype=np.float32)[:1], k=3, counterfactual=True)[0].to_dict()
    fields = set(decision) | set(decision["neighbors"][0])
    paragraph = re.search(r"^- `classify --json`.*?(?=^- )", README.read_text(), flags=re.S | re.M).group(0)
    named = set(re.findall(r"`([a-z_]+)`", paragraph))
    assert named == fields, f"README names {sorted(named - fields)} that a decision lacks, " \
                            f"and leaves out {sorted(fields - named)}"
    command = typer.main.get_command(load_commands()).commands["classify"]  # type: ignore[attr-defined]
    words = set(re.findall(r"\w+", command.help.split("With --json", 1)[1]))
    assert not fields - words, f"`vismem classify --help` leaves out {sorted(fields - words)}"


def _python_block(doc: str, after: str) -> str:
    """The first ```python block of docs/`doc` that follows the text `after`."""
    text = (DOCS / doc).read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(after):], flags=re.S).group(1)


def test_docs_python_samples_over_vectors_run_as_written(tmp_path, monkeypatch):
    """docs/quality.md's MemoryClassifier-on-disk sample and docs/search.md's filtered search
    run as written, given the arrays they name (X, y...; `mem`, `vectors`)."""
    import numpy as np

    from vismem import Memory

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 64)).astype(np.float32), np.arange(60) % 3
    given = {"X": X, "y": y, "X_new": rng.normal(size=(6, 64)), "y_new": ["0", "1", "2"] * 2,
             "X_test": rng.normal(size=(5, 64))}
    sample = _python_block("quality.md", "`MemoryClassifier(memory=PATH)`")
    exec(compile(sample.replace("MemoryClassifier(memory=\"mem\").fit().predict(X_test)",
                                "predicted = MemoryClassifier(memory=\"mem\").fit().predict(X_test)"),
                 "docs/quality.md", "exec"), given)
    assert len(given["predicted"]) == 5 and set(given["predicted"]) <= {"0", "1", "2"}
    with Memory.open("mem") as memory:
        assert len(memory) == 60 + 6 - 2  # fit, partial_fit, forget two

    with Memory.create("pets", encoder=None, dim=8) as mem:
        vectors = rng.normal(size=(40, 8)).astype(np.float32)
        mem.add_vectors(vectors, [("cat", "dog", "fox")[i % 3] for i in range(40)],
                        sources=[f"batch-{i % 8}" for i in range(40)],
                        metas=[{"camera": "ab"[i % 2], "night": i % 4 < 2} for i in range(40)])
        exec(compile(_python_block("search.md", "## Filtered search"), "docs/search.md", "exec"),
             {"mem": mem, "vectors": vectors[:2]})

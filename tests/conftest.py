"""Shared fixtures: real images on disk, real encoders, real stores. Nothing is mocked."""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
import functools
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

os.environ.setdefault("VISMEM_OFFLINE", "1")  # tests never download weights

# Never imported as tests: the fixtures are data (their generator is a record of how they
# were made), and schemathesis loads its hooks itself in the fuzz test.
collect_ignore = ["fixtures", "schemathesis_hooks.py"]

# fixtures/ holds data and the scripts that made it: --doctest-modules must not import them
# (memory_format1/make.py runs at import and rmtree()s the path in sys.argv[1]).
collect_ignore_glob = ["fixtures/*"]

from vismem.datasets import load_digits_images, split_per_class, write_image_folder  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as (RGB PIL images, string labels)."""
    return load_digits_images()


@pytest.fixture(scope="session")
def digit_folders(digits, tmp_path_factory):
    """Class-subfolder train (8/class) and test (3/class) folders of real digit images."""
    images, labels = digits
    root = tmp_path_factory.mktemp("digits")
    train, test = split_per_class(labels, [8, 3], seed=1)
    return (
        write_image_folder(root / "train", images, labels, train),
        write_image_folder(root / "test", images, labels, test),
    )


@pytest.fixture(scope="session")
def lite0():
    """The real offline EfficientNet-Lite0 encoder, built once per session."""
    from vismem.encoders import create_encoder

    return create_encoder("efficientnet_lite0")


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Shown:
    """A `Report` (maintenance.py) that keeps what it is told: for each piece of work, its
    description, its total and how much was done."""

    def __init__(self) -> None:
        self.work: list[list] = []

    @contextmanager
    def __call__(self, description: str, total: int):
        work = [description, total, 0]
        self.work.append(work)

        def advance(n: int) -> None:
            work[2] += n
        yield advance

    def done(self) -> list[tuple]:
        return [tuple(work) for work in self.work]


def on_terminal(command: list[str], timeout: float = 300,
                columns: int | None = None) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run `command` with stderr on a terminal (a pty), as in a shell, stdout piped: (the
    finished process, what the terminal was shown). Rich draws bars only on a terminal.
    `columns`: the terminal's width (COLUMNS, as a shell exports it)."""
    import pty
    import threading

    terminal, stderr = pty.openpty()
    shown = bytearray()

    def read_terminal() -> None:  # drained as it is written, so the bar never blocks
        try:
            while chunk := os.read(terminal, 65536):
                shown.extend(chunk)
        except OSError:  # the other end closed
            pass

    reader = threading.Thread(target=read_terminal)
    reader.start()
    try:
        env = {**os.environ, "COLUMNS": str(columns)} if columns else None
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout, env=env)
    finally:
        os.close(stderr)
        reader.join(timeout=30)
        os.close(terminal)
    return done, bytes(shown)


# Holds the write lock of the database named by argv[1] (as another process's write does)
# until its stdin closes.
HOLD_WRITE_LOCK = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN IMMEDIATE')\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def run_cli(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `vismem` CLI in a subprocess, as a user's script would: for what the
    process boundary is the point of (exit codes, stdout purity, kill -9)."""
    result = subprocess.run(
        [sys.executable, "-m", "vismem", *map(str, args)],
        capture_output=True, text=True, **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"vismem {args} exited {result.returncode}: {result.stderr}")
    return result


def unprivileged(command: list[str]) -> list[str]:
    """`command` as run by a user whom file permissions bind: as root, without the powers to
    read, write or chmod any file (setpriv drops them); the test is skipped where setpriv
    is missing."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("as root, needs setpriv (util-linux) to run without the power to read any file")
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]


def run_cli_unprivileged(*args: str) -> subprocess.CompletedProcess:
    """`run_cli` as a user whom file permissions bind (`unprivileged`)."""
    return subprocess.run(unprivileged([sys.executable, "-m", "vismem", *map(str, args)]),
                          capture_output=True, text=True, timeout=300)


def run_cli_here(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run the `vismem` CLI in this process (its real entry point, `cli.main`), with
    stdout and stderr captured apart: the same answers as `run_cli`, without starting
    Python and importing torch again for every command."""
    from vismem.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    result = subprocess.CompletedProcess(["vismem", *map(str, args)], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"vismem {args} exited {code}: {result.stderr}")
    return result


def json_lines(result: subprocess.CompletedProcess) -> list:
    """The JSON objects a `--json` command printed, one per stdout line (at least one)."""
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines, result.stderr
    return lines


@pytest.fixture
def cli():
    """The CLI, run in this process."""
    return run_cli_here


@pytest.fixture
def cli_process():
    """The CLI, run in a subprocess."""
    return run_cli


@pytest.fixture
def memdir(tmp_path: Path) -> Path:
    return tmp_path / "mem"


def png_bytes(image) -> bytes:
    """A PIL image as PNG bytes (what an upload or a file on disk holds)."""
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(memdir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    return start_servers(1, memdir, *args, env=env)[0]


def start_servers(count: int, memdir: Path, *args: str, env: dict | None = None) -> list[tuple[subprocess.Popen, str]]:
    """`count` `vismem serve` processes on `memdir`, started at once (each takes a second or
    two to import and open the memory), once each answers /healthz: (process, url) each."""
    with contextlib.ExitStack() as held:  # each port held while the next is taken: all differ
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in sockets]
    started = []
    for port in ports:
        process = subprocess.Popen(
            [sys.executable, "-m", "vismem", "serve", str(memdir), "--port", str(port), *args],
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        started.append((process, f"http://127.0.0.1:{port}"))
    try:
        return [_serving(process, url) for process, url in started]
    except BaseException:
        for process, _ in started:
            process.kill()
        raise


def _serving(process: subprocess.Popen, url: str) -> tuple[subprocess.Popen, str]:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read()) from None
            time.sleep(0.2)
    process.kill()
    raise AssertionError("server did not start")


def stop_server(process: subprocess.Popen) -> str:
    process.terminate()
    _, stderr = process.communicate(timeout=20)
    return stderr


@contextmanager
def serving(memory, token: str) -> Iterator[str]:
    """`create_app` on `memory` under a real uvicorn on 127.0.0.1, in this process (what a
    test monkeypatches holds in the server too): yields its address; closes the memory."""
    import uvicorn

    from vismem.service import ServiceSettings, create_app

    port = free_port()
    app = create_app(memory, ServiceSettings(token=token))
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started and time.time() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        memory.close()


# ---- another process holding a lock of the saved index ------------------------------------

# Holds the build lock of the index directory argv[1] as a process that rebuilds it does
# (`saved.building`: its pid in the lock file, rewritten every HOLDER_BEAT s while it
# lives), until stdin closes.
HOLDER_BEAT = 0.1
HOLD_BUILD_LOCK = (
    "import sys\n"
    "from pathlib import Path\n"
    "from vismem.search import saved\n"
    f"saved.HEARTBEAT_SECONDS = {HOLDER_BEAT}\n"
    "with saved.building(Path(sys.argv[1])):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)
# Holds MEMDIR/index.lock of the index directory argv[1] as a process saving or scrubbing the
# saved index does (`saved.locked`), until stdin closes.
HOLD_INDEX_LOCK = HOLD_BUILD_LOCK.replace("saved.building(", "saved.locked(")


@contextmanager
def holding(script: str, index: Path, *, stopped: bool = False) -> Iterator[subprocess.Popen]:
    """Another process that runs `script` (it takes a lock of the saved index in `index`,
    says "held" and keeps it until stdin closes), stopped at once with `stopped`; killed
    at the end."""
    holder = subprocess.Popen([sys.executable, "-c", script, str(index)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        if stopped:
            os.kill(holder.pid, signal.SIGSTOP)
        yield holder
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)


# ---- tests against real servers (Milvus, Ray) ---------------------------------------------
# Milvus's standalone server and Ray's cluster listen on network ports (Milvus on all
# interfaces, with no bind option), so tests marked `milvus` or `ray` run only inside a
# private network namespace whose one interface is loopback, beside a real Milvus server
# (.ci/with-milvus). When such tests are selected and the session is not already inside
# one, it re-executes itself there, so the README's `python -m pytest` runs them too:
# the whole session then runs in the namespace (offline by construction), and nothing it
# started outlives it. Where no namespace can be made they are skipped with the reason;
# with VISMEM_REQUIRE_MILVUS=1 (CI) they fail instead. A run given no paths, -k or -m (the
# README's and CI's `python -m pytest`) holds such tests, so it re-executes before it
# collects: collecting the suite takes ~15 s, and the session inside collects it again.
# So does a run with `-n N` (pytest-xdist), whose workers collect and cannot re-execute.

WITH_MILVUS = Path(__file__).resolve().parents[1] / ".ci" / "with-milvus"
SERVER_MARKERS = ("milvus", "ray")


@functools.cache
def _why_not_here() -> str | None:
    found = subprocess.run([sys.executable, str(WITH_MILVUS), "--check"], capture_output=True,
                           text=True, check=False)
    return None if found.returncode == 0 else found.stdout.strip() or found.stderr.strip()


def _outside() -> bool:
    """Not inside the namespace, and given no server of one's own (VISMEM_MILVUS_URI)."""
    return os.environ.get("VISMEM_NETNS") != "1" and not os.environ.get("VISMEM_MILVUS_URI")


def _rerun_inside(config, why: str) -> None:
    """Re-execute this pytest command inside a private network namespace beside a Milvus
    server (.ci/with-milvus); it does not return."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    print(f"\n{why}: re-running this session inside one (.ci/with-milvus)", flush=True)
    sys.stderr.flush()
    # A 20 ms time tick (Milvus default 200 ms) makes Strong reads ~10x quicker; what
    # they guarantee is the same.
    os.execv(sys.executable, [sys.executable, str(WITH_MILVUS), "--config", "proxy.timeTickInterval=20",
                              "--", *sys.orig_argv])


def _runs_the_whole_suite(config) -> bool:
    """Given no paths (the testpaths), no -k, -m or --deselect, and no rerun of failures
    only: every test is selected, the Milvus and Ray tests among them."""
    option = config.option
    return (config.args_source == pytest.Config.ArgsSource.TESTPATHS and not option.keyword
            and not option.markexpr and not option.deselect and not option.collectonly
            and not getattr(option, "lf", False) and not getattr(option, "stepwise", False))


def _starts_workers(config) -> bool:
    """pytest-xdist's controller (`-n N`, N > 0): its workers collect the tests, and a
    worker cannot re-execute itself (its controller talks to it over its stdin and stdout),
    so the controller cannot know whether they select Milvus or Ray tests: it re-executes
    inside the namespace before it starts them."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config):
    if (_runs_the_whole_suite(config) or _starts_workers(config)) and _outside() and _why_not_here() is None:
        _rerun_inside(config, "The suite's Milvus and Ray tests need a private network namespace with a Milvus "
                              "server")


def pytest_collection_modifyitems(config, items):
    wanted = [item for item in items if any(item.get_closest_marker(m) for m in SERVER_MARKERS)]
    if not wanted or config.option.collectonly:
        return
    inside = os.environ.get("VISMEM_NETNS") == "1"
    given = os.environ.get("VISMEM_MILVUS_URI")  # set inside, or a server of your own
    reason = None
    if _outside():
        reason = _why_not_here()
        if reason is None and hasattr(config, "workerinput"):  # (its controller did not re-execute: see above)
            reason = "an xdist worker cannot re-execute itself inside the namespace"
        if reason is None:
            _rerun_inside(config, f"{len(wanted)} tests need a private network namespace with a Milvus server")
    skips = {
        "milvus": None if given else os.environ.get("VISMEM_MILVUS_UNAVAILABLE") or reason,
        "ray": None if inside else "Ray listens on network ports: its tests run only in a private "
                                   f"network namespace (.ci/with-milvus): {reason or 'not in one'}",
    }
    for item in wanted:
        why = next((skips[m] for m in SERVER_MARKERS if item.get_closest_marker(m) and skips[m]), None)
        if why and os.environ.get("VISMEM_REQUIRE_MILVUS") == "1":
            raise pytest.UsageError(f"VISMEM_REQUIRE_MILVUS=1 but {item.nodeid} cannot run: {why}")
        if why:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def milvus_uri() -> str:
    """milvus://127.0.0.1:PORT of the private server (tests marked `milvus` only)."""
    return os.environ["VISMEM_MILVUS_URI"]


@pytest.fixture
def milvus_location(milvus_uri):
    """A fresh milvus://.../COLLECTION location; its collections (COLLECTION and
    COLLECTION__*: the side collection, an import's work) are dropped afterwards."""
    import uuid

    from pymilvus import MilvusClient

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{milvus_uri}/{name}"
    client = MilvusClient(uri=milvus_uri.replace("milvus://", "http://"))
    for collection in client.list_collections():
        if collection == name or collection.startswith(name + "__"):
            client.drop_collection(collection)
    client.close()


@pytest.fixture(params=["embedded", pytest.param("milvus", marks=pytest.mark.milvus)])
def location(request, tmp_path):
    """Where a memory lives, once for each home: a directory, and a Milvus collection."""
    if request.param == "embedded":
        return str(tmp_path / "mem")
    return request.getfixturevalue("milvus_location")

"""The HTTP API and web page over one `Memory`.

Each endpoint is the HTTP face of one CLI verb (see `parity.py`) and calls the same
`Memory` method with the same option names; the service reads and edits the memory
only through `Memory`'s public API.

Concurrency: many readers, one writer. Every use of the memory holds an asyncio
readers-writer lock (aiorwlock; waiting writers go before new readers) and runs in a
thread pool, so a classify never sees a half-applied edit and the event loop never
blocks. Encoding happens before any lock is taken, batched across requests
(`EncodeBatcher`); a write holds the lock only for the store's transaction, which is
committed before the response leaves. The queries the memory records (opt-in, `vismem
record-queries`) wait in RAM, since a search never writes; a task writes them every
`record_write_seconds`, as an edit is written, and as the server stops.

Security: editing endpoints need the bearer token; without one the service is
read-only. Request bodies, decoded pixel counts and content types are limited, and
nothing a client sends is used as a path on disk. The OpenAPI document says what the
running server enforces (`schema.py`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Callable, TypeVar

import aiorwlock
import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from swagger_ui_bundle import swagger_ui_path  # Swagger UI's files, so /docs works offline

from ..decide import VoteParams
from ..embed import PreparedImage, prepare_bytes
from ..errors import CheckpointExistsError, EncoderError, InvalidInputError, PartlyDoneError, VismemError
from ..images import ImageFile, ImageReadError, ImageTooLargeError, Skipped
from ..ingest import NO_DIRECTION, AddReport
from ..memory import Memory
from ..settings import describe
from ..store.base import missing_ids, nothing_matched, parse_pairs, parse_where
from ..store.checkpoints import Checkpoint
from .batcher import EncodeBatcher
from .http import (
    AnswerOptions,
    BodyLimit,
    Stopping,
    StopWaitingForBodies,
    HeadAsGet,
    add_error_handlers,
    as_is,
    known_fields,
    known_only,
    log,
    refuse_body,
    responses,
)
from .loops import needs_new_loop
from .models import (
    MAX_ID,
    MAX_VALUES,
    WHERE_HELP,
    AddOut,
    CheckpointIn,
    CheckpointName,
    DecisionOut,
    DeletedOut,
    HealthOut,
    InfoOut,
    ItemChange,
    ItemOut,
    ItemsChange,
    Label,
    MetaPair,
    NewLabel,
    NewSource,
    PageOut,
    RemovedOut,
    RollbackOut,
    SearchOut,
    Selector,
    Source,
    UpdatedOut,
    VoteName,
    WherePair,
    restriction_forms,
    vote_form,
)
from .schema import install_openapi

T = TypeVar("T")
STATIC = Path(__file__).parent / "static"
_STALE = object()
# The pages load only their own files: no inline script, nothing from elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
K = describe(VoteParams, "k")
ItemIdPath = PathParam(..., ge=0, le=MAX_ID, description="An item id.")
CheckpointPath = PathParam(..., description="The checkpoint's name.")
RESTRICT = restriction_forms()


BROWSE_PAGE = 100  # items a page of /browse shows (static/browse.js PAGE_SIZE)
# How often the server writes the queries its memory recorded (they wait in RAM: a search
# never writes), so that `vismem tune-index` beside it tunes on them: a write of at most
# KEEP vectors, under the write lock for milliseconds.
RECORD_WRITE_SECONDS = 30.0


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and access rules of one service."""

    token: str | None = None  # None: read-only service
    protect_reads: bool = False  # reading endpoints need the token too
    max_upload_bytes: int = 32 * 2**20  # per request body
    max_pixels: int = 40_000_000  # per decoded image
    max_list: int = 500  # items per page of GET /items: at least BROWSE_PAGE
    record_write_seconds: float = RECORD_WRITE_SECONDS  # how often recorded queries are written
    read_timeout: float = 60.0  # seconds a request's body may send nothing before 408

    def __post_init__(self) -> None:
        for name in ("record_write_seconds", "read_timeout"):
            seconds = getattr(self, name)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
                raise InvalidInputError(f"{name} must be a number of seconds above 0, got {seconds!r}")
        for name, least in (("max_upload_bytes", 1), ("max_pixels", 1), ("max_list", BROWSE_PAGE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                why = f" (/browse asks for pages of {BROWSE_PAGE})" if name == "max_list" else ""
                raise InvalidInputError(f"{name} must be a whole number of at least {least}{why}, got {value!r}")
        if self.protect_reads and not self.token:
            raise InvalidInputError("protecting reads needs a token: pass --token or set VISMEM_TOKEN")
        if self.token is not None:
            _check_token(self.token)


def _check_token(token: str) -> None:
    """Refuse a token no client could send, rather than start a server whose every edit
    answers 401: a header carries printable ASCII only (curl sends UTF-8, read back as
    Latin-1; a browser refuses to send it), and HTTP drops a value's edge spaces. The
    message names where, never the secret itself."""
    if len(token) < 8:
        raise InvalidInputError("the token is too short: use at least 8 characters")
    for at, char in enumerate(token, 1):
        if not " " <= char <= "~":
            raise InvalidInputError(
                f"the token has a character that no HTTP header can carry at position {at} (not printable ASCII): "
                "use letters, digits and punctuation, e.g. `openssl rand -hex 16`")
    if token != token.strip(" "):
        raise InvalidInputError("the token starts or ends with a space, which HTTP drops from the header: "
                                "remove it (use printable ASCII, e.g. `openssl rand -hex 16`)")


class _MemoryService:
    """The memory behind a readers-writer lock, its blocking work in a thread pool."""

    def __init__(self, memory: Memory, settings: ServiceSettings) -> None:
        self.memory = memory
        memory.auto_refresh = False  # readers share it: reload only under the write lock, below
        self.settings = settings
        self._lock: aiorwlock.RWLock | None = None  # made for the loop that uses it: `lock`
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._binding = threading.Lock()  # two loops' threads must not both make one
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vismem")
        # edits wait for other processes' writes here, one at a time, never in the readers' pool
        self.wait_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vismem-wait")
        # one forward pass at a time: torch already uses every core inside one
        self.encode_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vismem-encode")
        self.encoder = memory.encoder if memory.encoder_name is not None else None
        self.batcher = EncodeBatcher(self.encoder, self.encode_pool) if self.encoder else None

    @property
    def lock(self) -> aiorwlock.RWLock:
        """The readers-writer lock, of the running event loop: aiorwlock binds a lock to the
        first loop that waits on it and raises in any other (`loops.py`). Within one loop it
        is always the same lock; it is made again only once no one holds it, and then no
        one waits for it either (a lock released hands itself to its waiters)."""
        with self._binding:
            idle = self._lock is None or not (self._lock.reader_lock.locked or self._lock.writer_lock.locked)
            if needs_new_loop(self._lock_loop, idle, "the memory's readers-writer lock"):
                self._lock, self._lock_loop = aiorwlock.RWLock(), asyncio.get_running_loop()
            assert self._lock is not None
            return self._lock

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work that does not touch the memory (decoding) in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self.lock.reader_lock:
            result = await self.run(self._unless_stale, fn, *args, **kwargs)
        if result is not _STALE:
            return result
        # another process (e.g. the CLI) committed: reload under the write lock, then read
        async with self.lock.writer_lock:
            await self.run(self.memory.refresh)
        async with self.lock.reader_lock:
            return await self.run(fn, *args, **kwargs)

    def _unless_stale(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Any:
        # Readers share the lock, so none may reload the memory under another's feet.
        return _STALE if self.memory.is_stale() else fn(*args, **kwargs)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Another process's write (a long `vismem add`) is waited for before taking the
        # lock: readers queue behind a waiting writer, and would wait for that process too.
        await asyncio.get_running_loop().run_in_executor(self.wait_pool, self.memory.wait_for_writers)
        async with self.lock.writer_lock:
            return await self.run(self._refreshed, fn, *args, **kwargs)

    async def write_partly(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, str | None]:
        """A write that may end partly done: (what `fn` returns, None); or, when it committed
        and a step after failed, (what it committed, what stays undone and how to finish it)."""
        try:
            return await self.write(fn, *args, **kwargs), None
        except PartlyDoneError as exc:
            if exc.done is None:  # nothing says what committed: answered as an error (http.py)
                raise
            return exc.done, str(exc)

    async def write_recorded(self) -> None:
        """Write the queries the memory recorded, waiting in RAM, as an edit is written: after
        other processes' writes, outside the lock, then under it for the transaction alone.
        A failure is logged, and they wait for the next try."""
        waiting = 0
        try:
            waiting = self.memory.recorded_waiting()
            if waiting:  # (a read-only memory records none)
                await self.write(self.memory.write_recorded_queries)
        except Exception as exc:  # the server goes on; the queries stay in RAM
            log.warning("could not write the recorded queries waiting in RAM (%d): %s; trying again in %g s",
                        waiting, exc if isinstance(exc, VismemError) else "internal error",
                        self.settings.record_write_seconds, exc_info=not isinstance(exc, VismemError))

    async def write_recorded_every(self, stop: asyncio.Event) -> None:
        """`write_recorded` every `record_write_seconds` until `stop`, and once more then."""
        while True:
            try:
                await asyncio.wait_for(stop.wait(), self.settings.record_write_seconds)
                break
            except asyncio.TimeoutError:
                await self.write_recorded()
        await self.write_recorded()

    def _refreshed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.memory.refresh()  # catch up with other processes before editing
        return fn(*args, **kwargs)

    def need_encoder(self, instead: str = "") -> EncodeBatcher:
        if self.batcher is None:
            raise EncoderError(
                f"memory at {self.memory.location} has no encoder (it stores precomputed vectors), "
                f"so it cannot take images{instead}"
            )
        return self.batcher

    async def encode(self, prepared: list[PreparedImage]) -> np.ndarray:
        batcher = self.need_encoder()
        pixels = [p.pixels for p in prepared if p.pixels is not None]
        if not pixels:
            return np.empty((0, self.memory.dim), dtype=np.float32)
        step = batcher.max_batch
        parts = [batcher.encode(np.stack(pixels[i : i + step])) for i in range(0, len(pixels), step)]
        return np.concatenate(await asyncio.gather(*parts))

    async def read_image(self, upload: UploadFile, field: str = "file") -> tuple[str, bytes]:
        """An upload's (safe name, bytes); 415 unless it is sent as image/* (`field`: the form
        field it came in, for the curl line that shows how)."""
        content_type = (upload.content_type or "").split(";")[0].strip().lower()
        name = safe_name(upload.filename)
        if not content_type.startswith("image/"):
            raise HTTPException(
                415, f"{name}: only image uploads are accepted, got content type "
                f"{content_type or 'none'}; send it as image/* (curl: -F '{field}=@x.png;type=image/png')",
            )
        return name, await upload.read()

    def prepare(self, name: str, data: bytes, label: str | None) -> PreparedImage:
        try:
            return prepare_bytes(ImageFile(Path(name), label), data, self.need_encoder().encoder,
                                 thumbnails=label is not None, max_pixels=self.settings.max_pixels)
        except ImageTooLargeError as exc:
            if exc.limit != self.settings.max_pixels:  # Pillow's own limit, under --max-pixels
                raise
            # the client cannot raise it, but is told what the server's operator can
            raise ImageTooLargeError(exc.size, exc.limit, whose="this server's",
                                     set_by="`vismem serve --max-pixels`") from None

    async def query(self, file: UploadFile | None, vector: str | None) -> tuple[str | None, np.ndarray]:
        """The query of /classify and /search: an image upload's name and vector, or a
        vector sent as a JSON array (name None); exactly one of them, as fields of a form
        (a body of another type is a 415 before this: `http.known_fields`)."""
        if (file is None) == (vector is None):
            raise HTTPException(400, "send the query as `file` (an image) or as `vector` (a JSON array of "
                                f"{self.memory.dim} numbers)" + (", not both" if file is not None else ""))
        if vector is not None:
            return None, parse_vector(vector, self.memory.dim)
        assert file is not None
        return await self.query_vector(file)

    async def query_vector(self, file: UploadFile) -> tuple[str, np.ndarray]:
        """A query image's name and vector (1, dim); 400 if it does not decode."""
        self.need_encoder(": send the query as `vector`, a JSON array of numbers")
        name, data = await self.read_image(file)
        try:
            prepared = await self.run(self.prepare, name, data, None)
        except ImageReadError as exc:
            raise HTTPException(400, f"{name}: {exc}") from None
        vectors = await self.encode([prepared])
        if not vectors.any():
            raise HTTPException(400, f"{name}: {NO_DIRECTION}")
        return name, vectors

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.encode_pool.shutdown(wait=True)
        self.wait_pool.shutdown(wait=True)


def parse_vector(text: str, dim: int) -> np.ndarray:
    """A query vector sent as a JSON array of `dim` finite numbers, not all 0, as (1, dim)
    float32; else a 400 that names the field and the value (the memory's own check names
    rows, as the CLI's --queries array has them)."""
    too_large = HTTPException(400, "vector: a value is too large for float32 (at most about 3.4e38 in size)")
    try:
        values = json.loads(text, parse_float=_float_within_range)
    except OverflowError:
        raise too_large from None
    except (ValueError, RecursionError):  # not JSON, or nested too deep for the parser
        values = None
    if not (isinstance(values, list) and len(values) == dim
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise HTTPException(400, f"vector: expected a JSON array of {dim} numbers (this memory's dimension), "
                            f"e.g. [0.12, -0.5, ...]")
    try:
        wide = np.asarray(values, dtype=np.float64)  # an integer past float64 overflows here
    except OverflowError:
        raise too_large from None
    wrong = np.flatnonzero(~np.isfinite(wide))  # JSON's NaN, Infinity and -Infinity, which Python reads
    if wrong.size:
        more = wrong.size - 1
        raise HTTPException(400, f"vector[{wrong[0]}] is {json.dumps(values[wrong[0]])}: send finite numbers"
                            + (f" (and {more} more value{'s are' if more > 1 else ' is'} not finite)" if more else ""))
    largest = np.abs(wide).max(initial=0)
    if largest > np.finfo(np.float32).max:
        raise too_large
    if not largest:
        raise HTTPException(400, "vector: every value is 0, so it has no direction to compare (cosine similarity "
                            "needs one)")
    if largest < np.finfo(np.float32).tiny:  # float32 would hold it as 0s: only its direction counts
        wide = wide / largest
    return wide.astype(np.float32)[None, :]


def _float_within_range(text: str) -> float:
    """A JSON number as Python reads it, but one past float64's range (1e400) is no
    Infinity: it is too large."""
    value = float(text)
    if math.isinf(value):
        raise OverflowError(text)
    return value


def create_app(memory: Memory, settings: ServiceSettings | None = None) -> FastAPI:
    """A FastAPI app serving `memory`. The caller keeps ownership of (and closes) the memory."""
    settings = settings or ServiceSettings()
    service = _MemoryService(memory, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = asyncio.Event()
        recording = asyncio.create_task(service.write_recorded_every(stop))
        yield
        stop.set()
        await recording  # its last write, before the caller closes the memory
        if service.batcher is not None:
            await service.batcher.close()
        service.close()

    app = FastAPI(
        title="vismem",
        summary="Image classification as an editable visual memory.",
        description="Classify images by their nearest labelled exemplars, see every vote, and edit "
        "the memory. Each endpoint is the HTTP face of a `vismem` command, with the same option names. "
        + ("Editing endpoints need `Authorization: Bearer <token>`"
           + (", and so do reading ones." if settings.protect_reads else ".") if settings.token
           else "This server is read-only: it was started without a token, so every edit answers 403."),
        lifespan=lifespan,
        # a request whose head stalls is answered 408 before any route (`vismem serve`'s
        # protocol: cli/serve.py), so every operation can answer it
        responses=responses(408),
        docs_url=None,  # served below from local files: FastAPI's default loads a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.state.stopping = Stopping()  # `vismem serve` stops it as the server stops
    app.add_middleware(StopWaitingForBodies, stopping=app.state.stopping, read_timeout=settings.read_timeout)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    app.add_middleware(AnswerOptions, served=app)
    add_error_handlers(app)  # after BodyLimit: its guard wraps every other layer
    app.add_middleware(HeadAsGet)  # outermost: even an error answers a HEAD without its body
    reading, writing = _access(settings)
    _add_pages(app)
    _add_reading(app, service, reading, (401,) if settings.protect_reads else ())
    write_errors = ((401,) if settings.token else (403,)) + (409, 503, 507)
    _add_editing(app, service, writing, write_errors)
    _add_changing(app, service, writing, write_errors)
    _add_checkpoints(app, service, writing, write_errors)
    install_openapi(app)
    return app


def _add_pages(app: FastAPI) -> None:
    """The web page, its files, and the API docs (Swagger UI from the package, no CDN).

    Unlike the API's endpoints, the pages take any query string (no `known_fields`): they
    are fixed files that read none, so a parameter cannot be misspelt into a wrong answer,
    and a shared link with extra ones (`?utm_source=...`) opens as any web page does."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="vismem API",
            swagger_js_url="/swagger/swagger-ui-bundle.js", swagger_css_url="/swagger/swagger-ui.css",
            swagger_favicon_url="/swagger/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)  # HEAD too, as every GET (HeadAsGet)
    async def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/browse", include_in_schema=False)
    async def browse_page() -> FileResponse:
        return FileResponse(STATIC / "browse.html", headers=PAGE_HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:  # browsers ask for it on every page, even other than ours
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon",
                            headers={"Cache-Control": "public, max-age=86400"})


def _add_reading(app: FastAPI, service: _MemoryService, reading: list, read_errors: tuple[int, ...]) -> None:
    """Endpoints that only read the memory (open unless --protect-reads)."""
    memory, settings = service.memory, service.settings
    # /classify and /search take an image `file` or this (as the CLI's --queries): a JSON
    # array in a text part (form fields past 1,000 are refused, and embeddings are wider)
    query_vector = Form(None, description="Instead of `file`: the query vector as a JSON array of the memory's "
                        f"dimension ({memory.dim}; a memory made with `--encoder none` takes only these), as "
                        "`--queries` on the CLI.",
                        json_schema_extra={"contentMediaType": "application/json", "contentSchema": {
                            "type": "array", "items": {"type": "number"},
                            "minItems": memory.dim, "maxItems": memory.dim}})

    @app.get("/healthz", tags=["service"], dependencies=[Depends(known_fields)], **as_is(HealthOut))
    async def healthz() -> dict[str, Any]:
        """Liveness, access mode and encoder batching so far. Always open."""
        stats = service.batcher.stats.to_dict() if service.batcher else None
        return {"status": "ok", "read_only": settings.token is None,
                "protect_reads": settings.protect_reads, "encoder_batches": stats}

    @app.get("/checkpoints", tags=["checkpoints"], dependencies=reading, response_model=list[Checkpoint],
             responses=responses(*read_errors))
    async def list_checkpoints() -> list[dict[str, Any]]:
        """`vismem checkpoints`: the memory's checkpoints, oldest first."""
        return [c.to_dict() for c in await service.read(memory.checkpoints)]

    @app.get("/stats", tags=["memory"], dependencies=reading, **as_is(InfoOut, *read_errors))
    async def stats() -> dict[str, Any]:
        """`vismem info`: counts per class, encoder, settings, index (with measured recall), disk use."""
        return await service.read(memory.info)

    @app.post("/classify", tags=["memory"], dependencies=reading,
              **as_is(DecisionOut, 400, 409, 415, *read_errors))
    async def classify(
        file: UploadFile | None = File(None, description="The image to classify (image/* content type)."),
        vector: str | None = query_vector,
        k: int | None = vote_form("k"),
        vote: VoteName | None = vote_form("vote"),
        alpha: float | None = vote_form("alpha"),
        tau: float | None = vote_form("tau"),
        mix: float | None = vote_form("mix"),
        abstain: bool = Form(False, description="Answer label null, abstained true, for an image unlike "
                             "everything in memory (needs `vismem calibrate` first)."),
        only_label: list[Label] | None = RESTRICT["only_label"],
        only_source: list[Source] | None = RESTRICT["only_source"],
        where: list[WherePair] | None = RESTRICT["where"],
        counterfactual: bool = Query(False, description="Also return `counterfactual`: the fewest items whose "
                                     "removal (or blocking) would change the label, and the nearest item of "
                                     "the runner-up class."),
    ) -> dict[str, Any]:
        """`vismem classify`: the decision for one image (or vector), the same object as
        `classify --json` (`path` is the upload's file name, null for a vector;
        `?counterfactual=true` as `--counterfactual`)."""
        name, vectors = await service.query(file, vector)
        decisions = await service.read(
            memory.classify_vectors, vectors, paths=[name], k=k, vote=vote, alpha=alpha, tau=tau, mix=mix,
            abstain=abstain, labels=only_label, sources=only_source, where=parse_where(where),
            counterfactual=counterfactual)
        return decisions[0].to_dict()

    @app.post("/search", tags=["memory"], dependencies=reading,
              response_model=SearchOut,
              responses=responses(400, 409, 415, *read_errors))
    async def search(
        file: UploadFile | None = File(None, description="The image to search with (image/* content type)."),
        vector: str | None = query_vector,
        k: int = Form(K["default"], ge=K["min"], le=K["max"], description="How many nearest items."),
        only_label: list[Label] | None = RESTRICT["only_label"],
        only_source: list[Source] | None = RESTRICT["only_source"],
        where: list[WherePair] | None = RESTRICT["where"],
    ) -> dict[str, Any]:
        """`vismem search`: the k items nearest to one image (or vector), nearest first, with
        no vote. Restricted, it still holds k items whenever k items match."""
        name, vectors = await service.query(file, vector)
        rows = await service.read(memory.search, vectors, k, labels=only_label, sources=only_source,
                                  where=parse_where(where))
        return {"path": name, "neighbors": [hit.to_dict() for hit in rows[0]]}

    @app.get("/items", tags=["items"], dependencies=reading, response_model=PageOut,
             responses=responses(*read_errors))
    async def list_items(
        offset: int = Query(0, ge=0, le=MAX_ID, description="How many matching items to skip."),
        limit: int = Query(100, ge=1, le=settings.max_list, description="How many to answer."),
        label: list[Label] | None = Query(None, max_length=MAX_VALUES,
                                             description="Only items with this label (repeat for more)."),
        source: list[Source] | None = Query(None, max_length=MAX_VALUES,
                                               description="Only items from this source (repeat for more)."),
        where: list[WherePair] | None = Query(None, max_length=MAX_VALUES, description=WHERE_HELP),
    ) -> Response:
        """Items matching every given restriction, oldest first; paged (any offset costs the same)."""
        page = await service.read(memory.page, offset=offset, limit=limit, labels=label, sources=source,
                                  where=parse_where(where))
        # Answered as is: PageOut documents it, and re-validating 500 items would cost more than the page
        return JSONResponse(page.to_dict())

    @app.get("/items/{item_id}", tags=["items"], dependencies=reading, response_model=ItemOut,
             responses=responses(404, *read_errors))
    async def get_item(item_id: int = ItemIdPath) -> dict[str, Any]:
        """One item's metadata."""
        items = await service.read(memory.items, [item_id])
        if not items:
            raise HTTPException(404, f"no item with id {item_id}")
        return items[0].to_dict()

    @app.get("/items/{item_id}/thumbnail", tags=["items"], dependencies=reading, response_class=Response,
             responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "A JPEG of at most 128 px, kept when the item was added."},
                        **responses(404, *read_errors)})
    async def thumbnail(item_id: int = ItemIdPath) -> Response:
        """The small JPEG kept when the item was added; 404 when there is no such item, or
        it has none."""
        jpeg = await service.read(memory.thumbnail, item_id)  # no such item: ItemNotFoundError, 404
        if jpeg is None:
            raise HTTPException(404, f"item {item_id} has no thumbnail (added as a vector, imported from an export "
                                "made without --thumbnails, or held where none are kept)")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _add_editing(app: FastAPI, service: _MemoryService, writing: list, write_errors: tuple[int, ...]) -> None:
    """Endpoints that edit the memory: the token, or 403 on a read-only server."""
    memory = service.memory

    @app.post("/items", tags=["items"], status_code=201, dependencies=writing,
              response_model=AddOut,
              responses=responses(415, *write_errors))
    async def add_items(
        files: Annotated[list[UploadFile], File(description="Images (image/* content types).")],
        label: Annotated[NewLabel, Form(description="The label of every image.")],
        source: Annotated[NewSource, Form(description="Source tag of every image.")] = "upload",
        allow_duplicates: bool = Form(False, description="Add images whose content is already in the memory."),
        meta: list[MetaPair] | None = Form(
            None, max_length=MAX_VALUES, description="KEY=VALUE metadata for every image, for `where` "
            "restrictions (repeat for more; VALUE as JSON when it parses)."),
    ) -> dict[str, Any]:
        """`vismem add`: add images with one label. Returns new ids, and each image not added
        with why (a duplicate, or unreadable). 422 when none was added and none is held
        already (every one unreadable, or not to be added), naming each one's reason."""
        service.need_encoder()
        uploads = [await service.read_image(f, "files") for f in files]
        outcomes = await asyncio.gather(
            *(service.run(_try_prepare, service.prepare, name, data, label) for name, data in uploads)
        )
        prepared = [o for o in outcomes if isinstance(o, PreparedImage)]
        unreadable = [o for o in outcomes if isinstance(o, Skipped)]
        vectors = await service.encode(prepared)
        report: AddReport = await service.write(
            memory.add_prepared, prepared, vectors, source=source, allow_duplicates=allow_duplicates,
            meta=parse_pairs(meta, "meta"))
        report.skipped = unreadable + report.skipped
        refusal = report.refusal()  # as `vismem add` exits 1: nothing added, nothing held already
        if refusal is not None:
            raise HTTPException(422, f"{refusal}: " + "; ".join(f"{s.path}: {s.reason}" for s in report.skipped))
        return {**report.to_dict(), "items": await service.read(len, memory)}  # as `add --json`'s last line

    @app.delete("/items/{item_id}", tags=["items"], dependencies=writing, response_model=RemovedOut,
                responses=responses(404, *write_errors))
    async def delete_item(item_id: int = ItemIdPath) -> dict[str, Any]:
        """`vismem remove --id`: remove one item for good (its bytes are purged from disk;
        `unfinished` says when they could not be yet)."""
        removed, unfinished = await service.write_partly(memory.remove, [item_id], purge=True)
        if not removed:
            raise HTTPException(404, f"no item with id {item_id}")
        return {"removed": 1, "ids": removed, "missing": [], "items": await service.read(len, memory),
                "unfinished": unfinished, **memory.capabilities.purge_said()}

    @app.delete("/items", tags=["items"], dependencies=writing, response_model=RemovedOut,
                responses=responses(404, *write_errors),
                openapi_extra={"parameters": [Selector.openapi_parameter()]})
    async def delete_items(request: Request) -> dict[str, Any]:
        """`vismem remove`: remove items for good, by exactly one of `id` (repeatable), `label`,
        `source`, `where` (repeatable). Ids that do not exist are listed in `missing`; 404
        when none of the ids exists or no item matches, as the CLI exits 1."""
        await refuse_body(request, "give exactly one of id, label, source, where in the query string "
                          "(DELETE /items?label=cat, ?id=1&id=2)")
        chosen = _selector(request)
        targets = parse_where(chosen.where)
        removed, unfinished = await service.write_partly(memory.remove, chosen.id, label=chosen.label,
                                                         source=chosen.source, where=targets, purge=True)
        if not removed:  # nothing matched, so nothing changed
            labels = await service.read(memory.class_counts) if chosen.label is not None else ()
            raise HTTPException(404, nothing_matched(labels, ids=chosen.id, label=chosen.label,
                                                     source=chosen.source, where=chosen.where, where_name="where"))
        missing = missing_ids(chosen.id or (), removed)
        return {"removed": len(removed), "ids": removed, "missing": missing,
                "items": await service.read(len, memory), "unfinished": unfinished,
                **memory.capabilities.purge_said()}


def _add_changing(app: FastAPI, service: _MemoryService, writing: list, write_errors: tuple[int, ...]) -> None:
    """Endpoints that change items in place (label, weight): the token, as other edits."""
    memory = service.memory

    @app.patch("/items/{item_id}", tags=["items"], dependencies=writing, response_model=ItemOut,
               responses=responses(404, *write_errors))
    async def patch_item(change: ItemChange, item_id: int = ItemIdPath) -> dict[str, Any]:
        """`vismem relabel` / `block` / `boost` / `unblock` for one item: a new label, a vote
        weight (0 blocks, 1 is normal, >1 boosts), or both. Answers the item as it is now."""

        def apply() -> list:
            if memory.update([item_id], label=change.label, weight=change.weight):
                return memory.items([item_id])
            return []

        items = await service.write(apply)
        if not items:
            raise HTTPException(404, f"no item with id {item_id}")
        return items[0].to_dict()

    @app.patch("/items", tags=["items"], dependencies=writing, response_model=UpdatedOut,
               responses=responses(404, *write_errors))
    async def patch_items(change: ItemsChange) -> dict[str, Any]:
        """`vismem relabel` / `block` / `boost` / `unblock` for several items at once, in one
        transaction. Ids that do not exist are listed in `missing`; 404 if none exists (the
        CLI exits 1), nothing changed."""
        def apply() -> tuple[list[int], int]:
            unpruned = memory.unpruned_by(change.ids, change.label)
            return memory.update(change.ids, label=change.label, weight=change.weight), unpruned

        updated, unpruned = await service.write(apply)
        if not updated:
            raise HTTPException(404, nothing_matched((), ids=change.ids))
        weight = None if change.weight is None else float(change.weight)  # as the CLI says it: 0.0
        return {"updated": len(updated), "ids": updated, "missing": missing_ids(change.ids, updated),
                "label": change.label, "weight": weight, "reset_prune_counts": unpruned}


def _add_checkpoints(app: FastAPI, service: _MemoryService, writing: list, write_errors: tuple[int, ...]) -> None:
    """Endpoints that make, delete and roll back to checkpoints: the token, as other edits."""
    memory = service.memory

    @app.post("/checkpoints", tags=["checkpoints"], status_code=201, dependencies=writing,
              response_model=Checkpoint, responses=responses(400, 409, *write_errors))
    async def make_checkpoint(made: CheckpointIn) -> dict[str, Any]:
        """`vismem checkpoint`: record every item's label, weight, pruning count and relabel
        history and the settings as a named checkpoint; 409 if the name is taken (unless
        `replace`)."""
        try:
            return (await service.write(memory.checkpoint, made.name, replace=made.replace)).to_dict()
        except CheckpointExistsError as exc:
            raise CheckpointExistsError(f'{exc} (send "replace": true)') from None

    @app.delete("/checkpoints/{name}", tags=["checkpoints"], dependencies=writing,
                **as_is(DeletedOut, 404, *write_errors))
    async def delete_checkpoint(name: Annotated[CheckpointName, CheckpointPath]) -> dict[str, Any]:
        """`vismem delete-checkpoint`: delete a checkpoint (no item changes); 404 if there is none."""
        await service.write(memory.delete_checkpoint, name)
        return {"deleted": name}

    @app.post("/checkpoints/{name}/rollback", tags=["checkpoints"], dependencies=writing,
              response_model=RollbackOut, responses=responses(404, *write_errors))
    async def rollback(name: Annotated[CheckpointName, CheckpointPath]) -> dict[str, Any]:
        """`vismem rollback`: back to a checkpoint in one transaction: items added since
        removed and purged (`unfinished` says when they could not be yet), its items' state
        and its settings put back; items removed since stay removed (`gone_since`). 404 if
        there is no such checkpoint."""
        report, unfinished = await service.write_partly(memory.rollback, name)
        return {**report.to_dict(), "unfinished": unfinished}


def _access(settings: ServiceSettings) -> tuple[list, list]:
    """The dependencies of reading and of editing endpoints, as this server enforces them;
    FastAPI writes the OpenAPI security requirements from the same objects. Each refuses
    a query parameter or form field the endpoint does not take (`known_fields`), after the
    token: the endpoint's own checks answer only a caller who may use it."""
    bearer = HTTPBearer(auto_error=False, description="The token given to `vismem serve`.")

    def token_required(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), (settings.token or "").encode()):
            raise HTTPException(
                401, "missing or wrong token: send the header `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def read_only() -> None:
        raise HTTPException(403, "this server is read-only: restart it with --token or VISMEM_TOKEN to allow edits")

    reading = [Depends(token_required)] if settings.protect_reads else []
    writing = [Depends(token_required)] if settings.token else [Depends(read_only)]
    return [*reading, Depends(known_fields)], [*writing, Depends(known_fields)]


def _selector(request: Request) -> Selector:
    """DELETE /items's query as a `Selector`: `id` and `where` as lists, the others as one
    value each (given twice, a 422 that says so)."""
    given: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        given.setdefault(key, []).append(value)
    known_only("query parameter", request.query_params, Selector.model_fields)  # as other endpoints say it
    fields = {key: values if key in ("id", "where") else values[0] for key, values in given.items()}
    try:
        return Selector.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _try_prepare(prepare: Callable[..., PreparedImage], name: str, data: bytes, label: str):
    try:
        return prepare(name, data, label)
    except ImageReadError as exc:
        return Skipped(name, str(exc))


def safe_name(filename: str | None) -> str:
    """A client's file name, reduced to a printable base name: only ever shown, never opened."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    base = re.sub(r"[^\w.\- ]", "_", base).strip()[:120]
    return base or "upload"

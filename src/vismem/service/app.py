"""The HTTP API and web page over one `Memory`.

Concurrency: many readers, one writer. Every use of the memory holds an asyncio
readers-writer lock (aiorwlock; waiting writers go before new readers) and runs in a
thread pool, so a classify never sees a half-applied edit and the event loop never
blocks. Encoding happens before any lock is taken, batched across requests
(`EncodeBatcher`); a write holds the lock only for the SQLite transaction, which is
committed (synchronous=FULL) before the response leaves.

Security: editing endpoints need the bearer token; without one the service is
read-only. Request bodies, decoded pixel counts and content types are limited, and
nothing a client sends is used as a path on disk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional, TypeVar

import aiorwlock
import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # Swagger UI's files, so /docs works offline
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..embed import PreparedImage, prepare_bytes
from ..errors import EmptyMemoryError, EncoderError, InvalidInputError, VismemError
from ..images import ImageFile, ImageReadError, Skipped
from ..ingest import AddReport
from ..memory import Memory
from .batcher import EncodeBatcher

log = logging.getLogger("vismem.service")
T = TypeVar("T")
STATIC = Path(__file__).parent / "static"
_STALE = object()
MAX_K = 1000  # results are padded to k: an unbounded k would let one request exhaust memory
# The pages load only their own files: no inline script, nothing from elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and access rules of one service."""

    token: str | None = None  # None: read-only service
    protect_reads: bool = False  # reading endpoints need the token too
    max_upload_bytes: int = 32 * 2**20  # per request body
    max_pixels: int = 40_000_000  # per decoded image
    max_list: int = 500  # items per page of GET /items

    def __post_init__(self) -> None:
        if self.protect_reads and not self.token:
            raise InvalidInputError("protecting reads needs a token: pass --token or set VISMEM_TOKEN")
        if self.token is not None and len(self.token) < 8:
            raise InvalidInputError("the token is too short: use at least 8 characters")


class ItemPatch(BaseModel):
    """A change to one item: a new label, a new vote weight (0 blocks, >1 boosts), or both."""

    label: Optional[str] = Field(None, min_length=1, max_length=200)
    weight: Optional[float] = Field(None, ge=0, le=1e6)


class _MemoryService:
    """The memory behind a readers-writer lock, its blocking work in a thread pool."""

    def __init__(self, memory: Memory, settings: ServiceSettings) -> None:
        self.memory = memory
        memory.auto_refresh = False  # readers share it: reload only under the write lock, below
        self.settings = settings
        self.lock = aiorwlock.RWLock()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vismem")
        # one forward pass at a time: torch already uses every core inside one
        self.encode_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vismem-encode")
        self.encoder = memory.encoder if memory.encoder_name is not None else None
        self.batcher = EncodeBatcher(self.encoder, self.encode_pool) if self.encoder else None

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
        async with self.lock.writer_lock:
            return await self.run(self._refreshed, fn, *args, **kwargs)

    def _refreshed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.memory.refresh()  # catch up with other processes before editing
        return fn(*args, **kwargs)

    def need_encoder(self) -> EncodeBatcher:
        if self.batcher is None:
            raise EncoderError(
                f"memory at {self.memory.path} has no encoder (it stores precomputed vectors), "
                "so it cannot take images"
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

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.encode_pool.shutdown(wait=True)


def create_app(memory: Memory, settings: ServiceSettings | None = None) -> FastAPI:
    """A FastAPI app serving `memory`. The caller keeps ownership of (and closes) the memory."""
    settings = settings or ServiceSettings()
    service = _MemoryService(memory, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if service.batcher is not None:
            await service.batcher.close()
        service.close()

    app = FastAPI(
        title="vismem",
        summary="Image classification as an editable visual memory.",
        description="Classify images by their nearest labelled exemplars, see every vote, and edit "
        "the memory. Editing endpoints need `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: FastAPI's default loads a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes)
    _add_error_handlers(app)
    bearer = HTTPBearer(auto_error=False, description="The token given to `vismem serve`.")

    def check_token(credentials: HTTPAuthorizationCredentials | None) -> None:
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), (settings.token or "").encode()):
            raise HTTPException(
                401, "missing or wrong token: send the header `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def can_read(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.protect_reads:
            check_token(credentials)

    def can_write(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.token is None:
            raise HTTPException(
                403, "this server is read-only: restart it with --token or VISMEM_TOKEN to allow edits"
            )
        check_token(credentials)

    async def read_image(upload: UploadFile) -> tuple[str, bytes]:
        content_type = (upload.content_type or "").split(";")[0].strip().lower()
        name = safe_name(upload.filename)
        if not content_type.startswith("image/"):
            raise HTTPException(
                415, f"{name}: only image uploads are accepted, got content type "
                f"{content_type or 'none'}; send it as image/* (curl: -F 'file=@x.png;type=image/png')",
            )
        return name, await upload.read()

    def prepare(name: str, data: bytes, label: str | None) -> PreparedImage:
        return prepare_bytes(ImageFile(Path(name), label), data, service.need_encoder().encoder,
                             thumbnails=label is not None, max_pixels=settings.max_pixels)

    # ---- pages -------------------------------------------------------------------------

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title="vismem API",
            swagger_js_url="/swagger/swagger-ui-bundle.js", swagger_css_url="/swagger/swagger-ui.css",
            swagger_favicon_url="/swagger/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    async def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/browse", include_in_schema=False)
    async def browse_page() -> FileResponse:
        return FileResponse(STATIC / "browse.html", headers=PAGE_HEADERS)

    # ---- reading -----------------------------------------------------------------------

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Liveness, access mode and encoder batching so far. Always open."""
        stats = service.batcher.stats.to_dict() if service.batcher else None
        return {"status": "ok", "read_only": settings.token is None,
                "protect_reads": settings.protect_reads, "encoder_batches": stats}

    @app.get("/stats", tags=["memory"], dependencies=[Depends(can_read)])
    async def stats() -> dict[str, Any]:
        """What `vismem info --json` shows: counts per class, encoder, index, disk use."""
        return await service.read(memory.info)

    @app.post("/classify", tags=["memory"], dependencies=[Depends(can_read)])
    async def classify(
        file: UploadFile = File(..., description="The image to classify (image/* content type)."),
        k: Optional[int] = Form(None, ge=1, le=MAX_K, description="Neighbours that vote [memory default]."),
        vote: Optional[str] = Form(None, description="rank | softmax | distance | plurality | prototype | hybrid."),
        alpha: Optional[float] = Form(None, description="Rank vote offset."),
        tau: Optional[float] = Form(None, description="Softmax temperature."),
        abstain: bool = Form(False, description="Answer label null, abstained true, for an image unlike "
                             "everything in memory (needs `vismem calibrate` first)."),
    ) -> dict[str, Any]:
        """Classify one image: the same object as `vismem classify --json`."""
        options: dict[str, Any] = {"k": k, "vote": vote, "alpha": alpha, "tau": tau, "abstain": abstain}
        name, data = await read_image(file)
        try:
            prepared = await service.run(prepare, name, data, None)
        except ImageReadError as exc:
            raise HTTPException(400, f"{name}: {exc}") from None
        vectors = await service.encode([prepared])
        decisions = await service.read(memory.classify_vectors, vectors, paths=[name], **options)
        return decisions[0].to_dict()

    @app.get("/items", tags=["items"], dependencies=[Depends(can_read)])
    async def list_items(
        label: Optional[str] = None,
        source: Optional[str] = None,
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=settings.max_list),
    ) -> dict[str, Any]:
        """Items, oldest first, optionally only one label's or source's; paged."""

        def page() -> dict[str, Any]:
            return memory.page(offset=offset, limit=limit, labels=None if label is None else [label],
                               sources=None if source is None else [source]).to_dict()

        return await service.read(page)

    @app.get("/items/{item_id}", tags=["items"], dependencies=[Depends(can_read)])
    async def get_item(item_id: int) -> dict[str, Any]:
        """One item's metadata."""
        items = await service.read(memory.items, [item_id])
        if not items:
            raise HTTPException(404, f"no item with id {item_id}")
        return items[0].to_dict()

    @app.get("/items/{item_id}/thumbnail", tags=["items"], dependencies=[Depends(can_read)],
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(item_id: int) -> Response:
        """The small JPEG kept when the item was added."""
        jpeg = await service.read(memory.thumbnail, item_id)
        if jpeg is None:
            raise HTTPException(404, f"item {item_id} has no thumbnail (no such item, or added as a vector)")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    # ---- editing -----------------------------------------------------------------------

    @app.post("/items", tags=["items"], status_code=201, dependencies=[Depends(can_write)])
    async def add_items(
        files: list[UploadFile] = File(..., description="Images (image/* content types)."),
        label: str = Form(..., min_length=1, max_length=200),
        source: str = Form("upload", min_length=1, max_length=200),
        allow_duplicates: bool = Form(False),
    ) -> dict[str, Any]:
        """Add images with one label. Returns new ids, and skipped images with reasons."""
        service.need_encoder()
        uploads = [await read_image(f) for f in files]
        outcomes = await asyncio.gather(
            *(service.run(_try_prepare, prepare, name, data, label) for name, data in uploads)
        )
        prepared = [o for o in outcomes if isinstance(o, PreparedImage)]
        unreadable = [o for o in outcomes if isinstance(o, Skipped)]
        vectors = await service.encode(prepared)
        report: AddReport = await service.write(
            memory.add_prepared, prepared, vectors, source=source, allow_duplicates=allow_duplicates
        )
        report.skipped = unreadable + report.skipped
        return report.to_dict()

    @app.delete("/items/{item_id}", tags=["items"], dependencies=[Depends(can_write)])
    async def delete_item(item_id: int) -> dict[str, Any]:
        """Remove one item for good (its vector's bytes are purged from disk)."""
        removed = await service.write(memory.remove, [item_id], purge=True)
        if not removed:
            raise HTTPException(404, f"no item with id {item_id}")
        return {"removed": len(removed), "ids": removed}

    @app.delete("/items", tags=["items"], dependencies=[Depends(can_write)])
    async def delete_items(label: Optional[str] = None, source: Optional[str] = None) -> dict[str, Any]:
        """Remove every item with a label, or from a source (give exactly one)."""
        if (label is None) == (source is None):
            raise HTTPException(400, "give exactly one of ?label=... or ?source=...")
        removed = await service.write(memory.remove, label=label, source=source, purge=True)
        return {"removed": len(removed), "ids": removed}

    @app.patch("/items/{item_id}", tags=["items"], dependencies=[Depends(can_write)])
    async def patch_item(item_id: int, change: ItemPatch) -> dict[str, Any]:
        """Relabel an item, or set its vote weight (0 blocks it, >1 boosts it), or both."""
        if change.label is None and change.weight is None:
            raise HTTPException(400, "send a new label, a weight, or both")

        def apply() -> list:
            if memory.update([item_id], label=change.label, weight=change.weight):
                return memory.items([item_id])
            return []

        items = await service.write(apply)
        if not items:
            raise HTTPException(404, f"no item with id {item_id}")
        return items[0].to_dict()

    return app


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


# ---- errors and limits ----------------------------------------------------------------

_STATUS = ((EmptyMemoryError, 409), (EncoderError, 409), (InvalidInputError, 400), (VismemError, 400))


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(part) for part in e.get("loc", ()) if part not in ("body", "query", "path"))
            problems.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
        return error(422, "invalid request: " + "; ".join(problems))

    @app.exception_handler(VismemError)
    async def vismem_error(request: Request, exc: VismemError) -> JSONResponse:
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        return error(status, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal error: the server log has the details")


class _BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, before or while they arrive."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = (f"request body too large: the limit is {self.limit:,} bytes "
                   "(start the server with a larger --max-upload-mb)")
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"error": message}, status_code=413, headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:  # chunked bodies declare no length
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, limited, send)

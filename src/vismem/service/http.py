"""The HTTP edge: what each status means, the one error body, and the guards that keep
every failure a JSON answer on a connection that stays usable.

Every error is `{"error": "one line that says what to do"}`. `STATUS` is the one list of
what each status means: the OpenAPI document (`responses`) and docs/service.md are
written from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import sys
from typing import Any, Callable, MutableMapping, get_args, get_origin

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.routing import Match
from starlette.staticfiles import StaticFiles

from ..errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    DiskFullError,
    EmptyMemoryError,
    EncoderError,
    InvalidInputError,
    ItemNotFoundError,
    MemoryBusyError,
    MemoryClosedError,
    NotCalibratedError,
    PartlyDoneError,
    ReadOnlyMemoryError,
    VismemError,
)
from .models import PATTERN_RULES, not_whole

log = logging.getLogger("vismem.service")

STATUS: dict[int, str] = {
    400: "The body does not parse (not JSON; broken multipart, which the answer says and names the form "
         "fields the endpoint takes; or a form over Starlette's limits: 1,000 files, 1,000 fields, 1 MB a text "
         "field), or an uploaded query image does not decode as an image within the pixel limit, or a query "
         "`vector` is not an array of the memory's dimension of finite numbers, not all 0. Nothing changed.",
    401: "The bearer token is missing or wrong (`Authorization: Bearer <token>`). Nothing changed.",
    403: "This server is read-only (started without a token): restart it with --token or VISMEM_TOKEN. "
         "Nothing changed.",
    404: "No item with this id (or, for its thumbnail, the item has none), or no checkpoint with this name; "
         "or DELETE /items matched no item (none of its ids exists, or no item has its label or source or "
         "matches its where, which the answer names, as `vismem remove` exits 1), or none of the ids of a "
         "PATCH /items exists. Nothing changed.",
    408: "No part of the request's body arrived for the server's --read-timeout (seconds), or, under "
         "`vismem serve`, the request's head had not all arrived within them (before any route, so any "
         "request can be answered so); the connection is closed. Nothing changed: send it again.",
    409: "The memory cannot do this in its state: it is empty (nothing to classify), it has no "
         "abstention threshold yet (run `vismem calibrate`), it has no encoder (it stores precomputed "
         "vectors) so it cannot take images, or it lies on read-only media; or a checkpoint has this name "
         "already. Nothing changed.",
    413: "The request body is over --max-upload-mb. Nothing changed.",
    415: "A file part is not sent as image/*, or the body is not of the type the endpoint takes (a "
         "multipart form, or JSON, as this document says). Nothing changed.",
    422: "The request does not match this document (a missing, unknown, repeated, unknown-valued or "
         "out-of-range field, or a whole number such as an id not written in digits: 1.0, +1; or a body sent "
         "to an endpoint that reads none); or POST /items added none of its images and holds none of them "
         "already (each unreadable, or not to be added: the answer names each one's reason, as `vismem add` "
         "exits 1). Nothing changed.",
    503: "Another process (e.g. a `vismem` command) held the memory's write lock for 120 s; or the server "
         "is stopping and the request's body had not all arrived; try again. Nothing changed.",
    507: "The disk filled up during the write; nothing of it was kept. Free space (removing items "
         "works) and try again.",
}
# e.g. `curl -d '{...}'` without -H: curl sends it as a form, which FastAPI does not parse as JSON
JSON_BODY = "the body must be a JSON object, sent with the header Content-Type: application/json"
FORM_BODY = ("the body must be a multipart form (curl -F NAME=VALUE, and -F 'NAME=@x.png;type=image/png' "
             "for an image)")
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
NO_BODY = "this endpoint reads no body"
INTERNAL = "internal error: the server log has the details"  # a bug's answer: never its traceback
# A closed memory is the server's own mistake: a 500, as any bug. So is a PartlyDoneError
# left to this table: an edit that can end partly done answers 200 with what it committed
# and `unfinished` (app.py, write_partly). Never 503 (busy, nothing changed), though a purge
# cut off by a stopped holder of the saved index is a MemoryBusyError too.
STATUS_BY_ERROR = ((MemoryClosedError, 500), (PartlyDoneError, 500),
                   (CheckpointNotFoundError, 404), (ItemNotFoundError, 404), (CheckpointExistsError, 409),
                   (EmptyMemoryError, 409), (EncoderError, 409),
                   (ReadOnlyMemoryError, 409), (NotCalibratedError, 409), (MemoryBusyError, 503),
                   (DiskFullError, 507), (InvalidInputError, 400), (VismemError, 400))


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the error body model."""
    return {code: {"model": ErrorBody, "description": STATUS[code]} for code in sorted(codes)}


def as_is(model: type[BaseModel], *codes: int) -> dict[str, Any]:
    """Route options for an endpoint whose answer `model` documents but that answers its
    dict as it is: not re-validated (a float field would write JSON's 1 as 1.0, and a field
    a store adds to `vismem info` that `InfoOut` does not name would be dropped), with these
    error statuses."""
    return {"response_model": None, "responses": {200: {"model": model}, **responses(*codes)}}


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _RefusedBodyNotes(logging.Filter):
    """python-multipart logs a warning for each malformed body it parses ("Did not find CR
    at end of boundary (4)"), then raises; Starlette answers it 400, so the client is told.
    No handler being set up, Python printed the line on the server's stderr, naming no
    request: a client's mistake, already answered, in the operator's log. Only the
    parsers' byte loop is left out; python-multipart's other warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.funcName == "_internal_write" and record.levelno == logging.WARNING)


REFUSED_BODY_NOTES = _RefusedBodyNotes()
# the logger's name before python-multipart 0.0.13 renamed its package, and after
MULTIPART_LOGGERS = ("multipart.multipart", "python_multipart.multipart")


def _quiet_refused_bodies() -> None:
    for name in MULTIPART_LOGGERS:
        parser_log = logging.getLogger(name)
        if REFUSED_BODY_NOTES not in parser_log.filters:  # once, however many apps are made
            parser_log.addFilter(REFUSED_BODY_NOTES)


def add_error_handlers(app: FastAPI) -> None:
    """JSON errors for HTTP errors, schema violations and vismem's own errors; and a guard
    that turns any other exception into a 500 without breaking the connection."""
    _quiet_refused_bodies()  # a broken body's 400 is the client's answer, not a server log line

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _http_error(app, request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # does not parse: 400, as STATUS says
                at, why = e.get("loc", ("", "?"))[-1], (e.get("ctx") or {}).get("error", "")
                return error(400, f"the body is not JSON: {why} at character {at}")
            if tuple(e.get("loc", ())) == ("body",):  # the body as a whole
                # missing, not JSON, not an object; else a check of the whole object failed
                value_error = e.get("type") == "value_error"
                problems.append(str(e.get("msg", "")).removeprefix("Value error, ") if value_error else JSON_BODY)
                continue
            where = ".".join(str(part) for part in e.get("loc", ()) if part not in ("body", "query", "path"))
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")  # a model's own check
            rule = PATTERN_RULES.get(str((e.get("ctx") or {}).get("pattern")))
            if e.get("type") == "string_pattern_mismatch" and rule:  # the rule, not its regular expression
                message = f"{rule}, got {str(e.get('input'))[:80]!r}"
            elif "Expected UploadFile" in message:  # a part without a file name is a text field to Starlette
                field = where.split(".")[0]
                message = (f"not a file: send it as a file part, with a file name "
                           f"(curl -F '{field}=@x.png;type=image/png')")
            problems.append(f"{where}: {message}" if where else message)
        return error(422, "invalid request: " + "; ".join(problems))

    @app.exception_handler(VismemError)
    async def vismem_error(request: Request, exc: VismemError) -> JSONResponse:
        status = next(code for kind, code in STATUS_BY_ERROR if isinstance(exc, kind))
        if status == 500:
            log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
            # a partly done error's message says what committed and how to finish it
            return error(500, str(exc) if isinstance(exc, PartlyDoneError) else INTERNAL)
        return error(status, str(exc))

    app.add_middleware(CatchAll)


def _http_error(app: FastAPI, request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """An HTTP error in this service's words: Starlette's name no fix."""
    headers = dict(getattr(exc, "headers", None) or {})
    message = str(exc.detail)
    status, static = exc.status_code, request.scope.get("endpoint")
    if status == 405 and isinstance(static, StaticFiles) and not serves_file(static, request.scope):
        # StaticFiles refuses methods other than GET and HEAD before it looks for the
        # file: at a file that is not there, every method answers GET's 404
        status, headers, message = 404, {}, "Not Found"
    if status == 405:
        # A route's 405 names only the first route's methods. StaticFiles (/static,
        # /swagger) names its own, less OPTIONS (AnswerOptions answers it), and in its
        # scope no route of the app matches
        own = set(headers.get("Allow", "").split(", ")) - {""}
        allowed = allowed_methods(app, request.scope) or own | {"OPTIONS"}
        headers["Allow"] = ", ".join(sorted(allowed))
        message = f"{request.url.path} takes {headers['Allow']}, not {request.method}"
    elif status == 404 and message == "Not Found":  # Starlette's own: a path nothing serves
        message = f"no such path: {request.url.path} (the API is at /docs)"
    elif status == 400 and isinstance(exc.__context__, MultiPartException):  # raised parsing the form
        message = _broken_form(exc.__context__.message, request.scope.get("route"))
    elif status == 400 and (why := _unreadable_json(exc.__cause__)):  # FastAPI's, reading a JSON body
        message = f"the body is not JSON: {why}"
    return error(status, message, headers or None)


def _unreadable_json(exc: BaseException | None) -> str | None:
    """Why Python's parser could not read a JSON body (its syntax errors are answered apart,
    `add_error_handlers`), where FastAPI said only "There was an error parsing the body";
    None for another cause."""
    if isinstance(exc, UnicodeDecodeError):
        return f"it is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); send it as UTF-8"
    if isinstance(exc, RecursionError):
        return "it nests too deeply for the parser"
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return f"a number is too long (at most {sys.get_int_max_str_digits():,} digits)"
    return None


# Starlette's reasons for refusing a form, in this service's words
BROKEN_FORM = {
    "Invalid multipart data.": "it does not parse",
    "Missing boundary in multipart.": "its Content-Type header names no boundary (leave that header to the "
                                      "client, as curl -F does)",
    'The Content-Disposition header field "name" must be provided.': "a part has no name in its "
                                                                       "Content-Disposition header",
}


def _broken_form(reason: str, route: Any) -> str:
    """The 400 of a form Starlette could not read: why, and the fields the endpoint takes;
    or the limit it is over (too many files or fields, a text field over 1 MB)."""
    why = BROKEN_FORM.get(reason)
    if why is None:
        return "the form is over a limit: " + "; ".join(
            part[:1].lower() + part[1:] for part in reason.rstrip(".").split(". "))
    said = f"the body is not valid multipart/form-data: {why}"
    return f"{said}; {FORM_BODY} of the fields {form_fields(route)}" if route else said


def form_fields(route: Any) -> str:
    """The body fields an endpoint takes, in its order."""
    return ", ".join(field.alias for field in route.dependant.body_params)


async def known_fields(request: Request) -> None:
    """A request's query parameters and form fields must be the endpoint's, each single one
    once: FastAPI ignores any other (`only-label`, the CLI's spelling, searched every item;
    `?lable=cat` listed every item) and keeps the last of a repeated one (of two `file`
    parts, the first was dropped). A whole number among them, and in the path, must be
    digits (`whole_numbers`), and an endpoint that reads no body refuses one. A route that
    declares its query itself (DELETE /items: one `Selector`) checks it itself, with
    `known_only` and `refuse_body` too."""
    route = request.scope["route"]
    dependant = route.dependant
    if not (route.openapi_extra or {}).get("parameters"):
        known_only("query parameter", request.query_params, {p.alias: p for p in dependant.query_params})
        whole_numbers(dependant.query_params, {key: request.query_params.getlist(key) for key in request.query_params})
        if not dependant.body_params:
            await refuse_body(request, _takes_only(request.method, route))
    whole_numbers(dependant.path_params, {key: [value] for key, value in request.path_params.items()})
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    takes_form = any(isinstance(field.field_info, params.Form) for field in dependant.body_params)
    readable = kind in FORMS if takes_form else _is_json(kind)
    if dependant.body_params and kind and not readable:
        # FastAPI reads such a body as no body at all: the fields it holds were "missing"
        raise StarletteHTTPException(415, (f"{FORM_BODY} of the fields {form_fields(route)}" if takes_form
                                           else JSON_BODY)
                                     + f"; this request's body is {kind}")
    if takes_form and kind in FORMS:
        form = await request.form()  # parsed once: FastAPI reads the same
        known_only("form field", form, {field.alias: field for field in dependant.body_params})
        whole_numbers(dependant.body_params, {key: form.getlist(key) for key in form})


async def refuse_body(request: Request, takes: str) -> None:
    """422 for a body sent to an endpoint that reads none, where FastAPI ignores it (a
    rollback with one rolled back all the same); `takes` says what the endpoint takes. An
    empty body, whatever its Content-Type, is no body."""
    if await request.body():
        raise StarletteHTTPException(422, f"invalid request: {takes}: {NO_BODY}")


def _takes_only(method: str, route: Any) -> str:
    """What an endpoint that reads no body takes, in words."""
    query = ", ".join(param.alias for param in route.dependant.query_params)
    parts = ["its path"] * bool(route.dependant.path_params) + [f"its query string ({query})"] * bool(query)
    return f"{method} {route.path} " + (f"takes only {' and '.join(parts)}" if parts else "takes no input")


def whole_numbers(fields: list[Any], given: dict[str, list[Any]]) -> None:
    """422 for a whole-number field (an id, offset, k) whose text is not digits: FastAPI has
    pydantic read it, and pydantic reads "1.0", " 1" and "+1" as 1, and "1_0" as 10."""
    for field in fields:
        if not _is_int(field.field_info.annotation):
            continue
        for text in given.get(field.alias, ()):
            if isinstance(text, str) and (why := not_whole(text)):
                raise StarletteHTTPException(422, f"invalid request: {field.alias}: {why}")


def _is_int(annotation: Any) -> bool:
    """Whether a parameter takes whole numbers: int, or int in a list or with None (not bool)."""
    if annotation is int:
        return True
    kinds = set(get_args(annotation)) - {type(None)}
    return bool(kinds) and all(_is_int(kind) for kind in kinds)


def _is_json(kind: str) -> bool:
    """Whether FastAPI reads a body of this type as JSON: application/json, or a subtype
    that ends in +json."""
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def known_only(what: str, given: Any, fields: dict[str, Any]) -> None:
    """422 for a name in `given` (query parameters, form fields) that is none of `fields`
    (FastAPI's fields, or a model's), or one of them given twice where it takes one value."""
    unknown = sorted(set(given.keys()) - set(fields))
    if unknown:
        near = [f"{name} (not {name.replace('_', '-')})" for name in fields if name.replace("_", "-") in unknown]
        takes = f"this endpoint takes {', '.join(fields)}" if fields else f"this endpoint takes no {what}"
        raise StarletteHTTPException(422, f"invalid request: unknown {what} {', '.join(unknown)}; {takes}"
                                          + (f": {', '.join(near)}" if near else "")
                                          + (" (and `counterfactual` as a query parameter, ?counterfactual=true)"
                                             if "counterfactual" in unknown and what == "form field" else ""))
    repeated = [name for name, field in fields.items()
                if len(given.getlist(name)) > 1 and not _is_list(getattr(field, "field_info", field).annotation)]
    if repeated:
        raise StarletteHTTPException(422, f"invalid request: {what} {', '.join(repeated)} given more than once; "
                                          "it takes one")


def _is_list(annotation: Any) -> bool:
    """Whether a parameter's type takes repeated values: list[...], or list[...] | None."""
    return get_origin(annotation) is list or any(_is_list(arg) for arg in get_args(annotation))


def allowed_methods(app: FastAPI, scope: MutableMapping[str, Any]) -> set[str]:
    """Every method some route (or a mount of static files) takes at this request's path;
    none for a path nothing serves."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, child = route.matches(scope)
        if match == Match.NONE:
            continue
        static = getattr(route, "app", None)
        if isinstance(static, StaticFiles):  # a mount serves its whole prefix: only its files are there
            methods |= {"GET"} if serves_file(static, {**scope, **child}) else set()
        else:
            methods |= set(getattr(route, "methods", None) or ())
    if not methods:
        return methods
    return methods | ({"HEAD"} if "GET" in methods else set()) | {"OPTIONS"}  # HeadAsGet, AnswerOptions


def serves_file(static: StaticFiles, scope: MutableMapping[str, Any]) -> bool:
    """Whether `static` (the scope's mount, html off) has a file to GET at this path: a
    directory or a path it refuses (outside it, a null byte, too long) is its 404."""
    try:
        _, found = static.lookup_path(static.get_path(scope))
    except (OSError, ValueError):
        return False
    return found is not None and stat.S_ISREG(found.st_mode)


class AnswerOptions:
    """Answer OPTIONS at a path the app serves with 204 and an Allow header naming the
    methods it takes (RFC 9110: a client asks what a resource supports); FastAPI routes only
    the methods a route names, so it answered 405. No endpoint runs, so it is no operation
    of the OpenAPI document. A path nothing serves goes on to the app, which answers 404."""

    def __init__(self, app: Any, served: FastAPI) -> None:
        self.app = app
        self.served = served  # the app whose routes say what a path takes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            methods = allowed_methods(self.served, scope)
            if methods:
                answer = Response(status_code=204, headers={"Allow": ", ".join(sorted(methods))})
                return await answer(scope, receive, send)
        await self.app(scope, receive, send)


class HeadAsGet:
    """Answer HEAD as the GET it stands for, headers only (RFC 9110: a resource that takes
    GET takes HEAD). FastAPI routes only the methods a route names, so `curl -I /healthz`
    got 405."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        # a copy: the server reads its own scope's method to leave the body out as well
        await self.app({**scope, "method": "GET"}, receive, headers_only)


class CatchAll:
    """Answer an unexpected exception with a JSON 500 and keep the connection.

    Starlette's own handler for `Exception` answers and then raises again, so the server
    drops the connection, and with it the next requests a client had queued on it.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await error(500, INTERNAL)(scope, receive, send)


class BodyLimit:
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
            response = error(413, message, headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:  # chunked bodies declare no length
                    raise StarletteHTTPException(413, message)
            return msg

        await self.app(scope, limited, send)


STOPPING = ("the server is stopping, and this request's body had not all arrived: nothing of it was read, "
            "so nothing changed; send it again once the server is back")


def read_timed_out(seconds: float) -> str:
    """The 408 a request is answered when its client leaves the server waiting `seconds`."""
    return (f"no part of the request's body arrived for {seconds:g} s (the server's --read-timeout): "
            "it was dropped, so nothing changed; send it again")


def head_timed_out(seconds: float) -> bytes:
    """The whole 408 answer to a request whose head did not all arrive within `seconds`:
    raw bytes, as no request (and so no app) is there to answer it."""
    body = json.dumps({"error": f"the request's head did not all arrive within {seconds:g} s (the server's "
                                "--read-timeout): nothing changed; send it again"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))


class Stopping:
    """Told when the server stops (`vismem serve` calls `stop` in its loop), it answers 503 to
    every request still waiting for its body. uvicorn waits for each request in flight
    before it exits, and one whose client sent its headers and then stalls would hold off
    a SIGTERM for as long as the client likes; nothing of it was read, so nothing changed."""

    def __init__(self) -> None:
        self.stopped = False
        self._waiters: set[asyncio.Future] = set()

    def stop(self) -> None:
        self.stopped = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self, receive: Callable, timeout: float | None = None) -> dict:
        """`receive()`, or 503 if the server stops first, or 408 if nothing arrives within
        `timeout` seconds (uvicorn bounds only the wait between requests: a client that
        stalls mid-body would hold its connection and handler for ever)."""
        if self.stopped:
            raise StarletteHTTPException(503, STOPPING, headers={"Connection": "close"})
        waiter = asyncio.get_running_loop().create_future()
        message = asyncio.ensure_future(receive())
        self._waiters.add(waiter)
        try:
            await asyncio.wait((message, waiter), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiters.discard(waiter)
        if not message.done():
            message.cancel()
            if waiter.done():
                raise StarletteHTTPException(503, STOPPING, headers={"Connection": "close"})
            # the connection cannot carry another request: the rest of this body may still come
            raise StarletteHTTPException(408, read_timed_out(timeout or 0), headers={"Connection": "close"})
        return message.result()


class StopWaitingForBodies:
    """Read each request's body through `stopping`, up to its last part (after that a
    receive() waits for the client to go away, which stopping must not cut short): each
    part within `read_timeout` seconds of asking for it (idleness, not the whole body's
    time, so a large upload on a slow link still arrives)."""

    def __init__(self, app: Any, stopping: Stopping, read_timeout: float | None = None) -> None:
        self.app = app
        self.stopping = stopping
        self.read_timeout = read_timeout

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        whole = False

        async def until_stopped() -> dict:
            nonlocal whole
            if whole:
                return await receive()
            message = await self.stopping.receive(receive, self.read_timeout)
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, until_stopped, send)

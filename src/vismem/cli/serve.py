"""`vismem serve`: the HTTP API and web page over one memory."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import VismemError
from ..maintenance import showing_maintenance
from . import app, counted, err, interrupted_leaves
from .encoder_options import BatchSizeOpt, DeviceOpt, PrecisionOpt, RuntimeOpt, announce, encoder_options
from .numbers import number_option


@app.command()
def serve(
    memdir: Path = typer.Argument(..., help="Memory directory, or milvus://HOST:PORT/COLLECTION.",
                                 show_default=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default); an IPv6 one "
                             "bare or in brackets: ::1, [::1]."),
    port: int = number_option(8000, "--port", kind=int, min=0, max=65535,
                              help="TCP port (0: one the system chooses, said on stderr)."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="VISMEM_TOKEN", show_envvar=True,
        help="Bearer token that editing endpoints require. Without one the server is read-only.",
    ),
    protect_reads: bool = typer.Option(False, "--protect-reads",
                                       help="Require the token for reading endpoints too."),
    max_upload_mb: float = number_option(32.0, "--max-upload-mb", min=0.001, max=2.0**20, metavar="MIB",
                                        help="Largest request body, in MiB."),
    max_pixels: int = number_option(40_000_000, "--max-pixels", kind=int, min=1, metavar="PIXELS",
                                    help="Largest decoded image, in pixels."),
    record_write_seconds: float = number_option(
        30.0, "--record-write-seconds", min=1, max=86400, metavar="SECONDS",  # service.app.RECORD_WRITE_SECONDS
        help="How often the queries the memory records (`vismem record-queries`), waiting in RAM, are written "
             "to it, where `vismem tune-index` beside the server finds them; and as it stops."),
    read_timeout: float = number_option(60.0, "--read-timeout", above=0, max=86_400, metavar="SECONDS",
                                        help="Seconds a client may leave the server waiting: for a request's "
                                             "whole head, and between parts of its body (not for all of it); "
                                             "then it is answered 408 and its connection closed."),
    device: Optional[str] = DeviceOpt,
    runtime: str = RuntimeOpt,
    precision: str = PrecisionOpt,
    batch_size: Optional[int] = BatchSizeOpt,
) -> None:
    """Serve MEMDIR over HTTP: API (Swagger UI at /docs, OpenAPI at /openapi.json) and a web page at /.

    Editing endpoints need `Authorization: Bearer TOKEN` (--token or VISMEM_TOKEN);
    without a token the server starts read-only.
    """
    host = bare_host(host)  # before anything loads: a typo costs no model load
    import uvicorn

    from ..memory import Memory
    from ..service import ServiceSettings, create_app
    from ..service.models import MAX_REQUEST_HEAD
    from uvicorn.protocols.http.h11_impl import H11Protocol

    interrupted_leaves("every edit the server answered is committed")
    settings = ServiceSettings(token=token or None, protect_reads=protect_reads,
                               max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels,
                               record_write_seconds=record_write_seconds, read_timeout=read_timeout)
    with Memory.open(memdir, encoder_options=encoder_options(device, runtime, precision, batch_size)) as memory:
        service = create_app(memory, settings)  # loads the encoder now: fail before binding
        listening = _listening(host, port)
        announce(memory)
        info = memory.info()
        bound = listening.getsockname()[1]  # --port 0: the port the system chose
        err.print(f"serving {memdir} ({counted(info['items'], 'item')}, encoder {info['encoder'] or 'none'}) "
                  f"at http://{f'[{host}]' if ':' in host else host}:{bound}/  (API docs at /docs)")
        if token:
            err.print("edits enabled: they need `Authorization: Bearer <token>`"
                      + ("; reads need it too" if protect_reads else ""))
        else:
            err.print("read-only: no token given (--token or VISMEM_TOKEN), so every edit is refused")
        # by the address bound: 127.0.0.2, LOCALHOST and 127.1 are loopback as well
        if not ipaddress.ip_address(listening.getsockname()[0]).is_loopback:
            err.print(f"warning: listening on {host}, reachable from other machines; "
                      "the server speaks plain HTTP, so put TLS in front of it")
        os.environ.pop("VISMEM_TOKEN", None)  # not inherited by anything we start
        # h11 with a known limit on the request head, above what any schema-valid query needs;
        # no bars from requests' threads (a compaction after a DELETE): the log says it
        with showing_maintenance(None), listening:
            config = uvicorn.Config(service, host=host, port=bound, log_level="warning", access_log=False,
                                    http=_head_timeout(H11Protocol, read_timeout),
                                    h11_max_incomplete_event_size=MAX_REQUEST_HEAD)
            _stopping_server(uvicorn.Server, service.state.stopping)(config).run(sockets=[listening])


def bare_host(host: str) -> str:
    """--host as bound: an IPv6 address without the brackets a URL puts around it (the
    form the "serving at" line prints, `[::1]`); other hosts as given. Brackets around
    anything but an IPv6 address, or one left open, are bad usage (exit 2)."""
    if not (host.startswith("[") or host.endswith("]")):
        return host
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        raise typer.BadParameter(f"{host!r}: brackets hold an IPv6 address, as in [::1]; give a host name or an "
                                 "IPv4 address without them", param_hint="--host") from None
    return inner


def _listening(host: str, port: int) -> socket.socket:
    """A socket bound to host:port before the server starts, so that the address said is
    the one bound (--port 0 said port 0) and an address in use is one line, not a log
    record after "serving". IPv6 only for an IPv6 address, as uvicorn binds: `localhost`
    is 127.0.0.1."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        family, kind, proto, _, address = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        listening = socket.socket(family, kind, proto)
    except OSError as exc:
        raise VismemError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        listening.bind(address)
    except OSError as exc:
        listening.close()
        raise VismemError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return listening


def _stopping_server(base: type, stopping: Any) -> type:
    """uvicorn's server (`base`), which tells the app's `Stopping` as it starts to stop:
    requests still waiting for their body are answered then, not waited for (uvicorn
    waits for every request in flight, so a client that stalls would hold off a SIGTERM)."""

    class Server(base):
        async def shutdown(self, sockets: Any = None) -> None:
            stopping.stop()
            await super().shutdown(sockets)

    return Server


def _head_timeout(base: type, seconds: float) -> type:
    """uvicorn's h11 protocol (`base`), which closes a connection whose request head has not
    all arrived `seconds` after the connection opened or its last answer went (a partial
    head is answered 408 first). uvicorn's keep-alive timeout stops at the first byte, so a
    client that trickled a head (slowloris) held its connection, a file descriptor, for
    ever. Once a head is in, the body's wait is the app's (`StopWaitingForBodies`)."""
    import h11

    from ..service.http import head_timed_out

    class Protocol(base):
        _head_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_head()

        def connection_lost(self, exc: Any) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            if not self.transport.is_closing():
                self._head_timer = self.loop.call_later(seconds, self._head_late)

        def _head_late(self) -> None:
            self._head_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return  # a request came (pipelined ones too): its answer arms the next wait
            if self.conn.trailing_data[0]:  # part of a head; none at all is an idle connection
                self.transport.write(head_timed_out(seconds))
            self.transport.close()

    return Protocol

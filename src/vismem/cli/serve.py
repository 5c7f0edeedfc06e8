"""`vismem serve`: the HTTP API and web page over one memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..maintenance import showing_maintenance
from . import app, counted, err, interrupted_leaves
from .encoder_options import BatchSizeOpt, DeviceOpt, PrecisionOpt, RuntimeOpt, announce, encoder_options

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    memdir: Path = typer.Argument(..., help="Memory directory, or milvus://HOST:PORT/COLLECTION.",
                                 show_default=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="VISMEM_TOKEN", show_envvar=True,
        help="Bearer token that editing endpoints require. Without one the server is read-only.",
    ),
    protect_reads: bool = typer.Option(False, "--protect-reads",
                                       help="Require the token for reading endpoints too."),
    max_upload_mb: float = typer.Option(32.0, "--max-upload-mb", min=0.001, metavar="MIB",
                                        help="Largest request body, in MiB."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1, metavar="PIXELS",
                                   help="Largest decoded image, in pixels."),
    device: Optional[str] = DeviceOpt,
    runtime: str = RuntimeOpt,
    precision: str = PrecisionOpt,
    batch_size: Optional[int] = BatchSizeOpt,
) -> None:
    """Serve MEMDIR over HTTP: API (Swagger UI at /docs, OpenAPI at /openapi.json) and a web page at /.

    Editing endpoints need `Authorization: Bearer TOKEN` (--token or VISMEM_TOKEN);
    without a token the server starts read-only.
    """
    import uvicorn

    from ..memory import Memory
    from ..service import ServiceSettings, create_app
    from ..service.models import MAX_REQUEST_HEAD

    interrupted_leaves("every edit the server answered is committed")
    settings = ServiceSettings(token=token or None, protect_reads=protect_reads,
                               max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels)
    with Memory.open(memdir, encoder_options=encoder_options(device, runtime, precision, batch_size)) as memory:
        service = create_app(memory, settings)  # loads the encoder now: fail before binding
        announce(memory)
        info = memory.info()
        err.print(f"serving {memdir} ({counted(info['items'], 'item')}, encoder {info['encoder'] or 'none'}) "
                  f"at http://{host}:{port}/  (API docs at /docs)")
        if token:
            err.print("edits enabled: they need `Authorization: Bearer <token>`"
                      + ("; reads need it too" if protect_reads else ""))
        else:
            err.print("read-only: no token given (--token or VISMEM_TOKEN), so every edit is refused")
        if host not in LOOPBACK:
            err.print(f"warning: listening on {host}, reachable from other machines; "
                      "the server speaks plain HTTP, so put TLS in front of it")
        os.environ.pop("VISMEM_TOKEN", None)  # not inherited by anything we start
        # h11 with a known limit on the request head, above what any schema-valid query needs;
        # no bars from requests' threads (a compaction after a DELETE): the log says it
        with showing_maintenance(None):
            uvicorn.run(service, host=host, port=port, log_level="warning", access_log=False, http="h11",
                        h11_max_incomplete_event_size=MAX_REQUEST_HEAD)

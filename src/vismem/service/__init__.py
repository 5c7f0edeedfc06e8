"""vismem as a service: an HTTP API (FastAPI) and a web page over one memory.

`create_app(memory, ...)` builds the app; `vismem serve MEMDIR` runs it with uvicorn.
"""

from .app import ServiceSettings, create_app

__all__ = ["ServiceSettings", "create_app"]

"""``bfm-serve``: the HTTP service (needs the serve extra: fastapi, uvicorn, httpx, python-multipart).

    from bfm_deploy.serve import ServeOptions, create_app, Client
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "ServeOptions", "create_app"]


def __getattr__(name: str) -> Any:  # the extra's packages load only when asked for
    if name in ("ServeOptions", "create_app"):
        from . import app

        return getattr(app, name)
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(name)

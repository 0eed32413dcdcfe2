"""GET /healthz (the process answers), /readyz (bundle loaded, backend warm) and /metrics (Prometheus text)."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from ..failures import error_response
from ..state import Service

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz")
async def readyz(service: Service) -> JSONResponse:
    if not service.ready or service.running is None:
        return error_response(503, "not ready: loading the bundle")
    verifier = service.running.verifier
    return JSONResponse({"status": "ready", "bundle": verifier.bundle.name, "backend": verifier.backend.name,
                         "detector": verifier.detector_name, "pid": os.getpid()})  # pid: which replica


@router.get("/metrics")
async def metrics_text(service: Service) -> PlainTextResponse:
    return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

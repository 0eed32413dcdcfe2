"""POST /v1/explain: a pair's decision, as /v1/verify gives it, with each face's guided-backpropagation map."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ...errors import BfmError
from ..inputs import verify_images
from ..schemas import VerifyRequest, request_body
from ..state import Service

router = APIRouter()


@router.post("/v1/explain", openapi_extra=request_body(VerifyRequest))
async def explain(request: Request, service: Service) -> dict[str, Any]:
    """Two images, as for /v1/verify: {"result": what /v1/verify answers, "faces": [{"network", "map",
    "overlay" (PNG data URLs), "mask_region_share"}, ...]}; the maps are of the extractor the result's route
    used. 501 where the server has no torch."""
    a_blob, b_blob, aligned = await verify_images(request, service.options.max_pairs)
    a, b = await service.faces_of([a_blob, b_blob], aligned)
    if isinstance(a, BfmError):
        raise a
    if isinstance(b, BfmError):
        raise b
    (result,) = await service.batched(service.batcher.verify([(a, b)]))
    faces = await service.explaining.faces(service.verifier.bundle.root, [a.crop, b.crop], result.route)
    return {"result": result.to_dict(), "faces": faces}

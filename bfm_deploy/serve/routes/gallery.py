"""The /v1/gallery/ endpoints (bfm-serve --gallery): enrol, identify, remove, list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ...errors import BfmError
from ..failures import Refused
from ..inputs import json_body, named
from ..schemas import EnrollRequest, IdentifyRequest, request_body
from ..state import Service

router = APIRouter()


@router.post("/v1/gallery/enroll", openapi_extra=request_body(EnrollRequest))
async def gallery_enroll(request: Request, service: Service) -> dict[str, Any]:
    """A person's faces: all enrolled, or none (409 when enrolled already, unless extend)."""
    body = await json_body(request, EnrollRequest, service.options.max_pairs)
    service.need_gallery()  # no gallery: 404 before any image is decoded
    blobs = named(body.images)
    features = await service.features_of(blobs, body.aligned)
    failed = next((f for f in features if isinstance(f, BfmError)), None)
    if failed is not None:
        raise Refused(422, f"{failed}; nothing enrolled")
    good = [f for f in features if not isinstance(f, BfmError)]
    ids = await service.in_gallery(lambda g: g.add(body.identity, good, [name for name, _ in blobs],
                                                   extend=body.extend))
    return {"identity": body.identity, "face_ids": ids, "masked": sum(f.masked for f in good)}


@router.post("/v1/gallery/identify", openapi_extra=request_body(IdentifyRequest))
async def gallery_identify(request: Request, service: Service) -> dict[str, Any]:
    """Per probe what bfm-gallery identify says: the best identity (or none) and the top-k candidates."""
    body = await json_body(request, IdentifyRequest, service.options.max_pairs)
    service.need_gallery()
    features = await service.features_of(named(body.images), body.aligned)
    good = [f for f in features if not isinstance(f, BfmError)]
    found = iter(await service.in_gallery(  # one batched search for the request's probes
        lambda g: [i.to_dict() for i in g.identify_many(good, top_k=body.top_k, notes=[f.note for f in good])])
        if good else [])
    return {"probes": [{"error": str(f)} if isinstance(f, BfmError) else next(found) for f in features]}


@router.delete("/v1/gallery/identities/{identity:path}")  # a name may hold "/": every enrolable name is removable
async def gallery_remove(identity: str, service: Service) -> dict[str, Any]:
    return {"identity": identity, "removed": await service.in_gallery(lambda g: g.remove(identity))}


@router.get("/v1/gallery/identities")
async def gallery_list(service: Service) -> dict[str, Any]:
    people, open_set = await service.in_gallery(lambda g: (g.identities(), g.open_set()))
    return {"identities": [{"identity": n, "faces": f, "masked": m} for n, f, m in people], "open_set": open_set}

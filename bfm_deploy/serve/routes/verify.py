"""POST /v1/verify, /v1/verify/batch and /v1/embed: faces through the batcher, an error per image where one fails."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ...errors import BfmError
from ...verifier import Face
from ..detail import face_detail
from ..inputs import image_list, json_body, verify_images
from ..schemas import DETAIL, EmbedRequest, VerifyBatchRequest, VerifyRequest, request_body
from ..state import Service

router = APIRouter()


@router.post("/v1/verify", openapi_extra=request_body(VerifyRequest))
async def verify(request: Request, service: Service,
                 detail: Annotated[bool, Query(description=DETAIL)] = False) -> dict[str, Any]:
    """Two images (multipart fields a, b; or JSON base64): what bfm-verify --json prints (``?detail=true``: and
    each face's crop, box and landmarks)."""
    a_blob, b_blob, aligned = await verify_images(request, service.options.max_pairs)
    a, b = await service.faces_of([a_blob, b_blob], aligned, located=detail)
    if isinstance(a, BfmError):
        raise a  # 422 (NoFaceError, an unreadable image), as the error handler maps it
    if isinstance(b, BfmError):
        raise b
    (result,) = await service.batched(service.batcher.verify([(a, b)]))
    answer = result.to_dict()
    if detail:
        answer["faces"] = [face_detail(a), face_detail(b)]
    return answer


@router.post("/v1/verify/batch", openapi_extra=request_body(VerifyBatchRequest))
async def verify_batch(request: Request, service: Service) -> dict[str, Any]:
    """Many pairs: each its result, or its own error."""
    body = await json_body(request, VerifyBatchRequest, service.options.max_pairs)
    blobs = [(f"pairs[{i}].{side}", getattr(pair, side)) for i, pair in enumerate(body.pairs) for side in ("a", "b")]
    faces = await service.faces_of(blobs, body.aligned)
    pairs = [(faces[2 * i], faces[2 * i + 1]) for i in range(len(body.pairs))]
    good = [(a, b) for a, b in pairs if isinstance(a, Face) and isinstance(b, Face)]
    scored = iter(await service.batched(service.batcher.verify(good)) if good else [])
    results = []
    for pair in pairs:
        error = next((f for f in pair if isinstance(f, BfmError)), None)
        results.append({"error": str(error)} if error is not None else next(scored).to_dict())
    return {"results": results}


@router.post("/v1/embed", openapi_extra=request_body(EmbedRequest))
async def embed(request: Request, service: Service) -> dict[str, Any]:
    """Each face's embedding from the extractor its mask state needs, with its mask probability."""
    blobs, aligned = await image_list(request, service.options.max_pairs)
    faces = await service.faces_of(blobs, aligned)
    good = [f for f in faces if not isinstance(f, BfmError)]
    embedded = iter(await service.batched(service.batcher.embed(good)) if good else [])
    return {"faces": [{"error": str(f)} if isinstance(f, BfmError) else next(embedded).to_dict() for f in faces]}

"""The JSON request bodies of bfm-serve as pydantic models: what /docs shows, and the one place their rules live.

The rules: a boolean is a JSON boolean (``"false"``, 0 or null is a 422, never read as Python's ``bool()`` would
read it); an image is a base64 string; a list of images or pairs is counted against ``--max-pairs`` (413) before
any item of it is looked at; an identity passes the gallery's ``check_identity``; keys a model does not know are
ignored, as they always were. ``parse`` turns the first problem into one line that names its place in the body
(``pairs[3].a: not valid base64``). The limit comes in the validation context, so the models stay static.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, WithJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError

from ..errors import BfmError
from .failures import Refused

MAX_ITEMS = "max_items"  # the validation context's key: --max-pairs
AT = "{at}"  # where a message names the field; filled in by parse, which knows the location
IMAGES_HINT = 'expected {"images": [base64, ...]}'
PAIRS_HINT = 'expected {"pairs": [{"a": base64, "b": base64}, ...]}'
# error types whose message is ours and complete; any other is pydantic's own, reworded by _message
OUR_ERRORS = {"base64_type", "base64_value", "json_bool", "shape", "no_images", "too_many", "identity", "top_k"}


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise PydanticCustomError("base64_type", f"{AT}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("base64_value", f"{AT}: not valid base64") from None


def _json_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise PydanticCustomError("json_bool", AT + " must be a JSON boolean (true or false), got {got}",
                                  {"got": json.dumps(value)[:40]})
    return value


def too_many(count: int, limit: int, noun: str) -> str | None:
    """The 413 message for ``count`` items of one request over ``limit``, or None (multipart forms share it)."""
    return f"{count} {noun} in one request; at most {limit} (--max-pairs)" if count > limit else None


def _limit(info: ValidationInfo) -> int:
    return int((info.context or {})[MAX_ITEMS])


def _image_list(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, list):
        raise PydanticCustomError("shape", IMAGES_HINT)
    if not value:
        raise PydanticCustomError("no_images", "no images")
    over = too_many(len(value), _limit(info), "images")
    if over:
        raise PydanticCustomError("too_many", over)
    return value


def _pair_list(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, list) or not value or not all(isinstance(pair, dict) for pair in value):
        raise PydanticCustomError("shape", PAIRS_HINT)
    over = too_many(len(value), _limit(info), "pairs")
    if over:
        raise PydanticCustomError("too_many", over)
    return value


def _identity(value: Any) -> str:
    from ..gallery.gallery import check_identity

    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("shape", EnrollRequest.hint)
    try:
        return check_identity(value)
    except BfmError as exc:
        raise PydanticCustomError("identity", str(exc)) from None


def _top_k(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
        raise PydanticCustomError("top_k", "top_k must be an integer in 1..100")
    return value


Base64Image = Annotated[bytes, BeforeValidator(_base64), WithJsonSchema(
    {"type": "string", "contentEncoding": "base64", "description": "an image file (JPEG, PNG, WebP, ...), base64"})]
JsonBool = Annotated[bool, BeforeValidator(_json_bool)]
Aligned = Annotated[JsonBool, Field(description="the images are aligned 112x112 crops: no detection")]
# Field before the validator: its constraints then show in the schema (after it, pydantic only checks them)
Images = Annotated[list[Base64Image], Field(min_length=1, description="at most --max-pairs images (more: 413)"),
                   BeforeValidator(_image_list)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    hint: ClassVar[str]  # the shape of the body, for a message about a missing or mistyped field


class VerifyRequest(_Body):
    """Two images to compare (or, as multipart/form-data, the file fields a and b)."""

    hint = 'expected {"a": base64, "b": base64}'
    a: Base64Image
    b: Base64Image
    aligned: Aligned = False


class ImagePair(_Body):
    hint = PAIRS_HINT
    a: Base64Image
    b: Base64Image


class VerifyBatchRequest(_Body):
    """Pairs to compare; each gets its result, or its own error."""

    hint = PAIRS_HINT
    pairs: Annotated[list[ImagePair], Field(min_length=1, description="at most --max-pairs pairs (more: 413)"),
                     BeforeValidator(_pair_list)]
    aligned: Aligned = False


class EmbedRequest(_Body):
    """Images to embed (or, as multipart/form-data, the file field images, repeated)."""

    hint = IMAGES_HINT
    images: Images
    aligned: Aligned = False


class EnrollRequest(_Body):
    """A person's faces; all are enrolled, or none."""

    hint = 'expected {"identity": name, "images": [base64, ...]}'
    identity: Annotated[str, Field(description="at most 256 characters, no control characters; stripped"),
                        BeforeValidator(_identity)]
    images: Images
    aligned: Aligned = False
    extend: Annotated[JsonBool, Field(description="add faces to an enrolled identity (else: 409)")] = False


class IdentifyRequest(_Body):
    """Probe images, each matched against the gallery."""

    hint = IMAGES_HINT
    images: Images
    top_k: Annotated[int, Field(ge=1, le=100), BeforeValidator(_top_k)] = 5
    aligned: Aligned = False


REQUEST_MODELS: tuple[type[_Body], ...] = (VerifyRequest, VerifyBatchRequest, EmbedRequest, EnrollRequest,
                                           IdentifyRequest)
Body = TypeVar("Body", bound=_Body)


def parse(model: type[Body], body: dict[str, Any], max_items: int) -> Body:
    """``body`` (a parsed JSON object) as ``model``, or ``Refused``: 413 for a count over ``max_items``, else 422."""
    try:
        return model.model_validate(body, context={MAX_ITEMS: max_items})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise Refused(413 if error["type"] == "too_many" else 422, _message(model, error)) from None


def _message(model: type[_Body], error: ErrorDetails) -> str:
    at = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    if error["type"] in OUR_ERRORS:
        return error["msg"].replace(AT, at)
    return f"{at}: {error['msg'][:1].lower()}{error['msg'][1:]} ({model.hint})"


# /v1/verify's one query parameter: the same for a JSON body and a form, so it is neither's field
DETAIL = ("also answer, under faces, each face's aligned crop (a PNG data URL) and where the detector found it: box "
          "[x1, y1, x2, y2] and five landmarks [[x, y], ...] in the uploaded photo's pixels, with the detector's "
          "score (null for aligned inputs); without it the answer is what bfm-verify --json prints")


# -- OpenAPI -----------------------------------------------------------------------------------------------

FORM_FLAG = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"], "default": "false"}
UPLOADS = {
    VerifyRequest: {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string", "format": "binary"}, "b": {"type": "string", "format": "binary"},
        "aligned": FORM_FLAG}},
    EmbedRequest: {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}, "aligned": FORM_FLAG}},
}


def request_body(model: type[_Body]) -> dict[str, Any]:
    """A route's ``openapi_extra``: its JSON body is ``model`` (and a multipart form where it takes one). The
    routes read their bodies themselves (the JSON parser's own errors are 422s here, and a form is the other
    choice), so FastAPI does not see the model; ``add_request_schemas`` puts it in the document."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    if model in UPLOADS:
        content["multipart/form-data"] = {"schema": UPLOADS[model]}
    return {"requestBody": {"required": True, "content": content}}


def add_request_schemas(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return document

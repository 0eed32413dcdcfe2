"""bfm-serve's request bodies as pydantic models: /openapi.json shows them, and they keep the service's rules (JSON
booleans only, counts before contents, one-line errors that name the place in the body). In process: no server."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from bfm_deploy.serve.app import ServeOptions, create_app  # noqa: E402
from bfm_deploy.serve.failures import Refused  # noqa: E402
from bfm_deploy.serve.schemas import (  # noqa: E402
    EmbedRequest,
    EnrollRequest,
    IdentifyRequest,
    VerifyBatchRequest,
    VerifyRequest,
    parse,
)

DEMO = Path(__file__).resolve().parents[2] / "engines" / "demo"
B64 = base64.b64encode(b"an image").decode()
JSON_ENDPOINTS = {"/v1/verify": "VerifyRequest", "/v1/verify/batch": "VerifyBatchRequest", "/v1/embed": "EmbedRequest",
                  "/v1/gallery/enroll": "EnrollRequest", "/v1/gallery/identify": "IdentifyRequest"}


def _document() -> dict[str, Any]:
    """/openapi.json of an app in this process; the lifespan (the bundle) is not started: the document needs none."""
    async def fetch() -> Any:
        transport = httpx.ASGITransport(app=create_app(ServeOptions(bundle=DEMO)))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/openapi.json")

    response = asyncio.run(fetch())
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_openapi_names_the_request_schema_of_every_json_endpoint() -> None:
    document = _document()
    schemas = document["components"]["schemas"]
    for path, name in JSON_ENDPOINTS.items():
        body = document["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert schemas[name]["type"] == "object" and schemas[name]["properties"], name
    assert set(document["paths"]["/v1/verify"]["post"]["requestBody"]["content"]) == \
        {"application/json", "multipart/form-data"}
    assert "multipart/form-data" in document["paths"]["/v1/embed"]["post"]["requestBody"]["content"]
    verify = schemas["VerifyRequest"]
    assert verify["required"] == ["a", "b"] and verify["properties"]["aligned"]["type"] == "boolean"
    assert verify["properties"]["a"] == schemas["ImagePair"]["properties"]["a"]
    assert verify["properties"]["a"]["contentEncoding"] == "base64"
    assert schemas["VerifyBatchRequest"]["properties"]["pairs"]["items"] == {"$ref": "#/components/schemas/ImagePair"}
    top_k = schemas["IdentifyRequest"]["properties"]["top_k"]
    assert (top_k["type"], top_k["minimum"], top_k["maximum"], top_k["default"]) == ("integer", 1, 100, 5)
    assert schemas["EnrollRequest"]["required"] == ["identity", "images"]


@pytest.mark.parametrize("model, body, status, message", [
    (VerifyRequest, {"a": B64, "b": B64, "aligned": "false"}, 422,
     'aligned must be a JSON boolean (true or false), got "false"'),
    (VerifyRequest, {"a": B64, "b": B64, "aligned": None}, 422, "aligned must be a JSON boolean"),
    (VerifyRequest, {"a": B64, "b": 7}, 422, "b: expected a base64 string"),
    (VerifyRequest, {"a": "not base64!", "b": B64}, 422, "a: not valid base64"),
    (VerifyRequest, {"b": B64}, 422, "a: field required"),
    (VerifyBatchRequest, {"pairs": []}, 422, 'expected {"pairs": [{"a": base64, "b": base64}, ...]}'),
    (VerifyBatchRequest, {"pairs": [{"a": B64, "b": B64}, {"a": B64, "b": "?"}]}, 422, "pairs[1].b: not valid base64"),
    # counted before any item is looked at: the broken third pair does not matter
    (VerifyBatchRequest, {"pairs": [{"a": B64, "b": B64}] * 2 + [{"a": 1}]}, 413,
     "3 pairs in one request; at most 2 (--max-pairs)"),
    (EmbedRequest, {"images": [B64, B64, "?"]}, 413, "3 images in one request; at most 2 (--max-pairs)"),
    (EmbedRequest, {"images": []}, 422, "no images"),
    (EmbedRequest, {"images": "one"}, 422, 'expected {"images": [base64, ...]}'),
    (EmbedRequest, {"images": [B64, None]}, 422, "images[1]: expected a base64 string"),
    (EnrollRequest, {"identity": "  ", "images": [B64]}, 422, 'expected {"identity": name, "images": [base64, ...]}'),
    (EnrollRequest, {"identity": "..", "images": [B64]}, 422, "cannot be an identity name"),
    (EnrollRequest, {"identity": "x", "images": [B64], "extend": "true"}, 422, "extend must be a JSON boolean"),
    (IdentifyRequest, {"images": [B64], "top_k": True}, 422, "top_k must be an integer in 1..100"),
    (IdentifyRequest, {"images": [B64], "top_k": 101}, 422, "top_k must be an integer in 1..100"),
])
def test_a_bad_body_is_one_line_naming_its_place(model: Any, body: dict[str, Any], status: int, message: str) -> None:
    with pytest.raises(Refused) as refused:
        parse(model, body, max_items=2)
    assert refused.value.status == status and message in str(refused.value) and "\n" not in str(refused.value)


def test_a_good_body_is_decoded_and_its_defaults_filled() -> None:
    enrol = parse(EnrollRequest, {"identity": "  Jane Doe ", "images": [B64], "unknown": 1}, max_items=2)
    assert (enrol.identity, enrol.images, enrol.aligned, enrol.extend) == ("Jane Doe", [b"an image"], False, False)
    identify = parse(IdentifyRequest, {"images": [B64, B64], "aligned": True}, max_items=2)
    assert (identify.top_k, identify.aligned, len(identify.images)) == (5, True, 2)


def test_ray_app_options_are_read_by_their_field_types() -> None:
    options = ServeOptions.from_strings({"bundle": "engines/demo", "max_batch": "16", "max_wait_ms": "2.5",
                                         "api_key_file": "keys.txt", "gallery": "postgresql://h/db", "backend": "ort"})
    assert options == ServeOptions(bundle=Path("engines/demo"), max_batch=16, max_wait_ms=2.5,
                                   api_key_file=Path("keys.txt"), gallery="postgresql://h/db", backend="ort")
    assert ServeOptions.from_strings({"gallery": "work_dirs/g"}).gallery == "work_dirs/g"  # a folder, kept as text


@pytest.mark.parametrize(("values", "message"), [
    ({"max_batch": "lots"}, "option max_batch must be an integer, got 'lots'"),
    ({"timeout_s": "1e"}, "option timeout_s must be a number, got '1e'"),
    ({"max_batch": "2.0"}, "option max_batch must be an integer"),
    ({"bundel": "engines/demo"}, "unknown option 'bundel'; one of bundle, backend"),
])
def test_ray_app_options_refuse_bad_text_in_one_line(values: dict[str, str], message: str) -> None:
    from bfm_deploy.errors import BfmError

    with pytest.raises(BfmError, match=message):
        ServeOptions.from_strings(values)


def test_ray_build_app_checks_its_keys_before_ray_starts() -> None:
    from bfm_deploy.errors import BfmError
    from bfm_deploy.serve.ray_app import build_app

    with pytest.raises(BfmError, match="replicas must be a positive integer, got '0'"):
        build_app({"replicas": "0"})
    with pytest.raises(BfmError, match="without --api-key-file"):  # ServeOptions.check, as bfm-serve runs it
        build_app({"host": "0.0.0.0"})

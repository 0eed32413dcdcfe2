"""A synchronous client of bfm-serve (httpx): what the tests and the load benchmark use.

    with Client("http://127.0.0.1:8000", api_key="...") as c:
        c.verify("a.jpg", "b.jpg")["same"]
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import httpx

from ..errors import BfmError

Image = str | os.PathLike[str] | bytes


def _bytes(image: Image) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _b64(image: Image) -> str:
    return base64.b64encode(_bytes(image)).decode("ascii")


class ServiceError(BfmError):
    """The service answered with an error: ``status`` is the HTTP status, the message its one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def verify(self, a: Image, b: Image, aligned: bool = False) -> dict[str, Any]:
        """Both images as base64 JSON (parsed in C on the server, cheaper than a multipart form); the fields of
        ``bfm-verify --json``."""
        return self._answer(self._http.post("/v1/verify", json={"a": _b64(a), "b": _b64(b), "aligned": aligned}))

    def verify_upload(self, a: Image, b: Image, aligned: bool = False) -> dict[str, Any]:
        """The same as a multipart upload (what ``curl -F a=@... -F b=@...`` sends)."""
        files = {"a": ("a", _bytes(a)), "b": ("b", _bytes(b))}
        return self._answer(self._http.post("/v1/verify", files=files, data={"aligned": str(aligned).lower()}))

    def explain(self, a: Image, b: Image, aligned: bool = False) -> dict[str, Any]:
        """/v1/explain: ``result`` (what ``verify`` answers) and per face its map, overlay and mask-region share."""
        return self._answer(self._http.post("/v1/explain", json={"a": _b64(a), "b": _b64(b), "aligned": aligned}))

    def verify_batch(self, pairs: list[tuple[Image, Image]], aligned: bool = False) -> list[dict[str, Any]]:
        body = {"pairs": [{"a": _b64(a), "b": _b64(b)} for a, b in pairs], "aligned": aligned}
        return self._answer(self._http.post("/v1/verify/batch", json=body))["results"]  # type: ignore[no-any-return]

    def embed(self, images: list[Image], aligned: bool = False) -> list[dict[str, Any]]:
        body = {"images": [_b64(image) for image in images], "aligned": aligned}
        return self._answer(self._http.post("/v1/embed", json=body))["faces"]  # type: ignore[no-any-return]

    def gallery_enroll(self, identity: str, images: list[Image], aligned: bool = False, extend: bool = False) -> dict[str, Any]:
        body = {"identity": identity, "images": [_b64(i) for i in images], "aligned": aligned, "extend": extend}
        return self._answer(self._http.post("/v1/gallery/enroll", json=body))

    def gallery_identify(self, images: list[Image], top_k: int = 5, aligned: bool = False) -> list[dict[str, Any]]:
        body = {"images": [_b64(i) for i in images], "top_k": top_k, "aligned": aligned}
        return self._answer(self._http.post("/v1/gallery/identify", json=body))["probes"]  # type: ignore[no-any-return]

    def gallery_remove(self, identity: str) -> int:
        from urllib.parse import quote

        return int(self._answer(self._http.delete(f"/v1/gallery/identities/{quote(identity, safe='')}"))["removed"])

    def gallery_list(self) -> dict[str, Any]:
        return self._answer(self._http.get("/v1/gallery/identities"))

    def ready(self) -> dict[str, Any]:
        return self._answer(self._http.get("/readyz"))

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        response.raise_for_status()
        return response.text

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ServiceError(response.status_code, message)
        return response.json()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

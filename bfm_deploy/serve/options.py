"""What ``bfm-serve`` is started with (its command-line options, and Ray's ``build_app`` keys)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import BfmError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeOptions:
    bundle: Path | str | None = None  # default: the default bundle
    backend: str = "auto"
    detector: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64  # faces per batch, across requests
    max_wait_ms: float = 5.0  # how long a batch waits for more requests after its first
    queue_size: int = 256  # jobs waiting for a batch; beyond it: 503
    timeout_s: float = 30.0  # per request
    max_body_mb: float = 32.0
    max_pairs: int = 64  # per /v1/verify/batch request, images per /v1/embed request
    workers: int = 2  # decoding and detection threads
    api_key_file: Path | None = None
    gallery: str | None = None  # a gallery folder or PostgreSQL connection string: the /v1/gallery/ endpoints
    allow_origins: tuple[str, ...] = ()  # sites whose pages may call the API from a browser (origin.py)

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> ServeOptions:
        """Options given as text (``serve run ...:build_app key=value``), each read as its field's type: numbers
        as numbers, the bundle and key-file paths as paths, the gallery (a folder or a connection string) as
        written. An unknown key or a value of the wrong kind is one line naming it."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        typed: dict[str, object] = {}
        for key, text in values.items():
            if key not in names:
                raise BfmError(f"unknown option {key!r}; one of {', '.join(names)}")
            typed[key] = _from_text(key, text, hints[key])
        return cls(**typed)  # type: ignore[arg-type]  # each value has its field's type by _from_text

    def check(self) -> None:
        if self.api_key_file is None and self.host not in LOOPBACK:
            raise BfmError(f"refusing to serve on {self.host} without --api-key-file (without keys bfm-serve "
                           "listens on 127.0.0.1 only)")
        for name in ("max_batch", "queue_size", "max_pairs", "workers"):
            if getattr(self, name) < 1:
                raise BfmError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_wait_ms < 0 or self.timeout_s <= 0 or self.max_body_mb <= 0:
            raise BfmError("--max-wait-ms must be >= 0, --timeout-s and --max-body-mb > 0")
        from .origin import check_origin_option

        for origin in self.allow_origins:
            check_origin_option(origin)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


def _from_text(key: str, text: str, hint: object) -> object:
    if typing.get_origin(hint) is tuple:  # a list option: comma-separated
        return tuple(part.strip() for part in text.split(",") if part.strip())
    kinds = typing.get_args(hint) or (hint,)
    for kind, what in ((int, "an integer"), (float, "a number")):
        if kind in kinds:
            try:
                return kind(text)  # type: ignore[operator]
            except ValueError:
                raise BfmError(f"option {key} must be {what}, got {text!r}") from None
    if Path in kinds:  # the bundle and the key file; the gallery is typed str (a folder or a connection string)
        return Path(text)
    return text

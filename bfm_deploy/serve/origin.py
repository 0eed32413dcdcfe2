"""Requests a browser sends for another site, refused: what the API key does against remote clients, this does
against web pages.

A page on any site can make its visitor's browser POST to a service on 127.0.0.1: a form, or a ``fetch`` with a
``text/plain`` body, needs no CORS preflight, and bfm-serve reads any body as JSON. A DNS name that the page's
site rebinds to 127.0.0.1 even looks same-origin to the browser. A bfm-serve without keys would then verify,
enrol or identify for that page. Two rules close both:

- a POST, PUT, PATCH or DELETE whose ``Origin`` (browsers send it on every cross-origin one) is neither this
  server's own origin nor one of ``--allow-origin`` is refused, and so is one marked ``Sec-Fetch-Site:
  cross-site``;
- without API keys, the ``Host`` a request names must be a loopback address or ``localhost`` (a rebound name is
  neither), on every path.

Clients that are not browsers (curl, ``bfm_deploy.serve.Client``, bfm-bench) send no ``Origin`` and are not
affected; the page bfm-serve itself serves is same-origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..errors import BfmError

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def check_origin_option(origin: str) -> str:
    """An ``--allow-origin`` value as browsers write an Origin: ``scheme://host[:port]``, nothing after it."""
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise BfmError(f"--allow-origin {origin!r}: expected scheme://host[:port], e.g. https://bfm.example.org")
    return _origin(parts.scheme, parts.hostname, parts.port)


def refusal(method: str, scheme: str, headers: Mapping[str, str], allowed: frozenset[str], has_keys: bool) -> str | None:
    """Why this request is refused (one line), or None. ``headers`` with lower-case names, ``scheme`` the
    request's own (http behind uvicorn, https behind a TLS proxy that says so)."""
    host = headers.get("host", "")
    host_name, host_port = _split_host(host, scheme)
    if not has_keys and not _is_loopback(host_name):
        return (f"Host {host[:80]!r} is not this server: without --api-key-file bfm-serve answers requests for "
                "127.0.0.1 or localhost only")
    if method.upper() not in UNSAFE_METHODS:
        return None
    if headers.get("sec-fetch-site") == "cross-site":
        return "cross-site request refused (sent by a page of another site)"
    origin = headers.get("origin")
    if origin is None:
        return None
    own = _origin(scheme, host_name, host_port) if host_name else None
    given = urlsplit(origin)
    try:
        normal = _origin(given.scheme, given.hostname or "", given.port) if given.scheme in DEFAULT_PORTS else origin
    except ValueError:  # a port that is not a number
        normal = origin
    if normal == own or normal in allowed:
        return None
    return f"cross-origin request from {origin[:80]!r} refused (allow a site of yours with --allow-origin)"


def _split_host(host: str, scheme: str) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{host}")
        return (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 80)
    except ValueError:  # a malformed Host header (a port that is not a number)
        return "", 0


def _origin(scheme: str, host: str, port: int | None) -> str:
    return f"{scheme}://{host.lower()}:{port or DEFAULT_PORTS[scheme]}"


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False

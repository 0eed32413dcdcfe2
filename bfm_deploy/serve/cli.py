"""``bfm-serve``: the verification service (``bfm_deploy.serve``), on uvicorn."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import click

from ..cli_options import backend_option, bfm_command, bundle_option, detector_option, note, quiet_option
from ..cli_support import one_line_errors
from ..errors import BfmError
from ..optional import require


@bfm_command()
@bundle_option
@backend_option()
@detector_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (other than loopback: needs --api-key-file).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keys, one a line (or sha256:<hex> of a key); requests to /v1/ then need X-API-Key or a Bearer token.")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=64, show_default=True, help="Faces per batch, across requests.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=5.0, show_default=True,
              help="How long a batch waits for more requests after its first.")
@click.option("--queue-size", type=click.IntRange(1), default=256, show_default=True, help="Jobs waiting for a batch; beyond: 503.")
@click.option("--timeout-s", type=click.FloatRange(0.1), default=30.0, show_default=True, help="Per request.")
@click.option("--max-body-mb", type=click.FloatRange(0.01), default=32.0, show_default=True, help="Largest request body.")
@click.option("--max-pairs", type=click.IntRange(1), default=64, show_default=True, help="Pairs per /v1/verify/batch, images per /v1/embed.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Decoding and detection threads.")
@click.option("--gallery", default=None, metavar="GALLERY",
              help="Serve /v1/gallery/ (enrol, identify, remove, list) on this gallery: a folder, or a PostgreSQL "
                   "connection string (postgresql://...) that replicas share.")
@click.option("--allow-origin", "allow_origins", multiple=True, metavar="ORIGIN",
              help="A site (scheme://host[:port]) whose pages may call the API from a browser; repeat. Other "
                   "sites' requests get 403.")
@click.option("--ray", "on_ray", is_flag=True, help="Serve on Ray Serve (the ray extra): $RAY_ADDRESS's cluster, or a local one.")
@click.option("--replicas", type=click.IntRange(1, 1024), default=1, show_default=True, help="--ray: replicas, each with its own batcher.")
@quiet_option
@one_line_errors
def main(bundle: Path, backend: str, detector: str, host: str, port: int, api_key_file: Path | None, max_batch: int,
         max_wait_ms: float, queue_size: int, timeout_s: float, max_body_mb: float, max_pairs: int, workers: int,
         gallery: str | None, allow_origins: tuple[str, ...], on_ray: bool, replicas: int) -> None:
    """Serve mask-routed face verification over HTTP (OpenAPI docs at /docs) with cross-request batching.

    \b
    bfm-serve --port 8000
    bfm-serve --ray --replicas 2 --port 8000
    curl -F a=@examples/zakayev_1.jpg -F b=@examples/zakayev_3.jpg http://127.0.0.1:8000/v1/verify
    """
    require("fastapi", "serve", "bfm-serve")  # what the app imports; its message names the extra, never a traceback
    uvicorn = require("uvicorn", "serve", "bfm-serve")
    from .app import ServeOptions, create_app

    options = ServeOptions(bundle=bundle, backend=backend, detector=detector, host=host, port=port,
                           max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size, timeout_s=timeout_s,
                           max_body_mb=max_body_mb, max_pairs=max_pairs, workers=workers, api_key_file=api_key_file,
                           gallery=gallery, allow_origins=allow_origins)
    if on_ray:
        require("ray.serve", "ray", "bfm-serve --ray")
        from .ray_app import run

        options.check()
        note(f"bfm-serve on Ray Serve, {replicas} replica(s), http://{host}:{port}")
        run(options, replicas)
        return
    if replicas != 1:
        raise BfmError("--replicas needs --ray (one process serves one replica)")
    app = create_app(options)
    # Everything that can fail is opened before the server listens, so that a bad bundle, a damaged gallery or a
    # port in use is one error line and exit 2, never a traceback after "bfm-serve on http://..." was printed.
    check_before_listening(options)
    sock = listening_socket(host, port)
    note(f"bfm-serve on http://{host}:{sock.getsockname()[1]} (bundle {bundle}, docs at /docs)")
    # uvicorn stops accepting on SIGTERM/SIGINT and lets the requests in flight finish before the app shuts down.
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=60)
    uvicorn.Server(config).run(sockets=[sock])


def check_before_listening(options: Any) -> None:
    """Load the bundle (files and hashes) and open the gallery once, as the app will."""
    from ..bundle import Bundle, default_bundle

    bundle = Bundle.load(options.bundle or default_bundle())
    if options.gallery is not None:
        from ..gallery import Gallery

        with Gallery.open(options.gallery, bundle, create=True):
            pass


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a port in use is a BfmError (uvicorn would log and exit 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BfmError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    main()

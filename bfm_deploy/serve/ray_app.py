"""bfm-serve on Ray Serve: the same FastAPI application, one ``Verifier`` and ``Batcher`` per replica.

Each replica batches the requests it receives across callers (the role ``@serve.batch`` plays in a plain Ray
Serve deployment; here it is the service's own batcher, so both ways of running batch alike). Ray spreads
requests over the replicas, on one machine or on a cluster.

    bfm-serve --ray --replicas 2 --port 8000                                   # a local Ray instance
    serve run bfm_deploy.serve.ray_app:build_app replicas=2 bundle=engines/demo  # Ray's own CLI
"""

from __future__ import annotations

from typing import Any

from ..errors import BfmError
from .app import ServeOptions, create_app


def deployment(options: ServeOptions, replicas: int) -> Any:
    """The bound Ray Serve application (``serve.run`` it)."""
    from ray import serve

    @serve.deployment(name="bfm", num_replicas=replicas, ray_actor_options={"num_cpus": 0})
    @serve.ingress(create_app(options))
    class BfmReplica:
        """A replica: the app's lifespan loads the bundle and starts its batcher."""

    return BfmReplica.bind()  # type: ignore[attr-defined]  # serve.deployment's wrapper adds bind()


def build_app(args: dict[str, str]) -> Any:
    """Application builder for ``serve run bfm_deploy.serve.ray_app:build_app key=value ...``: the keys are
    ServeOptions fields (bundle, backend, detector, max_batch, max_wait_ms, ..., api_key_file, gallery), read by
    ``ServeOptions.from_strings``, and replicas (replicas share a PostgreSQL gallery, or a folder on one machine)."""
    values = dict(args)
    replicas = values.pop("replicas", "1")
    if not replicas.isdigit() or int(replicas) < 1:
        raise BfmError(f"replicas must be a positive integer, got {replicas!r}")
    options = ServeOptions.from_strings(values)
    options.check()
    return deployment(options, int(replicas))


def run(options: ServeOptions, replicas: int) -> None:
    """``bfm-serve --ray``: join the Ray cluster of ``$RAY_ADDRESS`` or start a local one, serve until SIGTERM or
    Ctrl-C, then shut the application down (its replicas finish what they hold)."""
    import os
    import signal
    import threading

    import ray
    from ray import serve

    # Serve kills an HTTP proxy that misses its 5 s readiness check three times, which fails serve.start; on
    # a busy machine the proxy takes longer than that to come up. A local cluster started here inherits these
    # (a cluster of $RAY_ADDRESS keeps its own settings).
    for name in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S"):
        os.environ.setdefault(name, "30")
    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(deployment(options, replicas), name="bfm", route_prefix="/")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):  # a timed wait, so that a handler runs promptly in this thread
            pass
    finally:  # Ray's own SIGTERM handler may end the wait with SystemExit: shut down all the same
        serve.shutdown()
        ray.shutdown()

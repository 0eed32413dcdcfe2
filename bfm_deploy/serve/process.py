"""A ``bfm-serve`` process on a free loopback port, started and waited for until ready: what the load
benchmark (``bfm-bench --serve``) and the service tests run."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BfmError
from .client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, bundle: Path | str, backend: str, args: tuple[str, ...] = (), log: Path | None = None,
                 ready_timeout_s: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        output = log.open("w") if log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bfm_deploy.serve.cli", "--bundle", str(bundle), "--backend", backend,
             "--port", str(self.port), *args],
            stdout=output, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout_s
        with Client(self.url) as client:
            while True:
                if self.proc.poll() is not None:
                    raise BfmError(f"bfm-serve exited with {self.proc.returncode} before it was ready{self._tail()}")
                try:
                    if client.ready()["status"] == "ready":
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise BfmError(f"bfm-serve was not ready within {ready_timeout_s:g} s{self._tail()}")
                time.sleep(0.2)

    def _tail(self) -> str:
        return f": {self.log.read_text()[-300:].strip()}" if self.log is not None and self.log.is_file() else ""

    def client(self, api_key: str | None = None) -> Client:
        return Client(self.url, api_key=api_key)

    def stop(self, timeout_s: float = 90.0) -> int:
        """SIGTERM (the requests in flight finish), then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

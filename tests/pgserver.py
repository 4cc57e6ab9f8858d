"""A real, throw-away PostgreSQL server for the tests of studies shared through a database.

It uses Debian's `postgresql` package (the README's test command installs it where it can: as root with
apt-get, as CI runs). Without the package the tests that need it are skipped with the reason. PostgreSQL
refuses to run as root, so as root the server runs as the package's `postgres` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running() -> Iterator[str]:
    """Starts a server with trust authentication on 127.0.0.1 and yields its SQLAlchemy URL; stops it after."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")
    folder = Path(tempfile.mkdtemp(prefix="kexp-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = folder / "data"
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "kexp",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*pg_ctl, "-o", f"-p {port} -h 127.0.0.1 -k {folder} -F", "-l", str(folder / "server.log"),
                        "-w", "start"], check=True, capture_output=True, timeout=120)
        yield f"postgresql://kexp@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)

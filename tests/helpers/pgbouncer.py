"""pgbouncer in transaction mode in front of the tests' PostgreSQL, as a fleet would run it.

Debian's ``pgbouncer`` package (``.ci/run`` installs it). The tests skip without it,
and fail when ``CE_TEST_PGBOUNCER`` says CI installed it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PGBOUNCER_ENV = "CE_TEST_PGBOUNCER"


def _binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )
    if found is None:
        if os.environ.get(PGBOUNCER_ENV):
            pytest.fail(f"{PGBOUNCER_ENV} is set but pgbouncer is not installed")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def pgbouncer(server_url: str, folder: Path, *, pool_size: int = 8) -> Iterator[str]:
    """A pgbouncer in transaction mode in front of ``server_url``'s database.

    Yields the URL through it, with the same user and database. ``pool_size`` server
    connections serve every client.
    """
    binary = _binary()
    url = sa.engine.make_url(server_url)
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)  # pgbouncer refuses to run as root; it runs as nobody
    users = folder / "users.txt"
    users.write_text(f'"{url.username}" ""\n')
    config = folder / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={url.host or '127.0.0.1'} port={url.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\nmax_client_conn = 1000\n"
    )
    for path in (users, config):
        path.chmod(0o644)
    command = [binary, *(["-u", "nobody"] if os.geteuid() == 0 else []), str(config)]
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                assert proc.stderr is not None
                pytest.fail(f"pgbouncer did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()

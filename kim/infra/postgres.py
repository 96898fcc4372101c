"""A throwaway PostgreSQL server for tests and local trials.

Uses the server binaries of Debian's `postgresql` package (or any `initdb` on
PATH). PostgreSQL refuses to run as root, so as root the cluster is owned by and
run as the `postgres` system user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

from kim.infra.kafka import free_port


class PostgresLaunchError(RuntimeError):
    pass


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresLaunchError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found: install them, e.g. "
        "`apt-get install postgresql`"
    )


class PostgresServer:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.bin = _bin_dir()
        self._as_postgres_user = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_postgres_user:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise PostgresLaunchError(f"{' '.join(args[:2])} failed:\n{result.stdout}{result.stderr}")
        return result

    def start(self, timeout_s: float = 30.0) -> "PostgresServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as_postgres_user:
            shutil.chown(self.data_dir, "postgres", "postgres")
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            self._run(str(self.bin / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--no-sync")
        # fsync off: a test server's data is thrown away, and durability tests kill
        # our processes, not the database server.
        options = (f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(pgdata), "-o", options,
                  "-l", str(self.data_dir / "server.log"), "-w", "-t", str(int(timeout_s)), "start")
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        pgdata = self.data_dir / "pgdata"
        if (pgdata / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop")

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

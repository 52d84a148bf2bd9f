"""Failover: two coordinators on one PostgreSQL database, the SDK given both URLs.

A throwaway PostgreSQL server is started as ``crates/store/src/testing.rs`` starts one:
``initdb`` into a temporary directory, listening only on a Unix socket there, run as
``nobody`` (through util-linux ``setpriv``) when the tests run as root. Without PostgreSQL's
server programs (``initdb`` on ``PATH`` or in ``/usr/lib/postgresql/*/bin``) the test skips,
or fails when ``$RUNEGRID_REQUIRE_POSTGRES`` is set.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import httpx
import pytest

from runegrid import ApiError, ConnectionFailed, Grid
from runegrid.local import find_binary

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[3]
PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")


def _pg_bin() -> Path | None:
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and all((Path(d) / p).is_file() for p in PROGRAMS):
            return Path(d)
    versions = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if d.parent.name.isdigit() and all((d / p).is_file() for p in PROGRAMS):
            versions.append((int(d.parent.name), d))
    return max(versions)[1] if versions else None


def _wait(what: str, timeout: float, probe: Callable[[], T | None]) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A new database on a throwaway PostgreSQL server; yields its URL."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        reason = (
            "no PostgreSQL server programs (initdb on PATH or in /usr/lib/postgresql/*/bin); "
            "on Debian: apt-get install postgresql"
        )
        if os.environ.get("RUNEGRID_REQUIRE_POSTGRES"):
            pytest.fail(f"RUNEGRID_REQUIRE_POSTGRES is set, but {reason}")
        pytest.skip(reason)
    root = os.geteuid() == 0
    # A short path (a Unix socket's path is limited to about 100 bytes).
    dir = Path(tempfile.mkdtemp(prefix="runegrid-pg-", dir="/tmp"))
    prefix: list[str] = []
    if root:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(dir, nobody.pw_uid, nobody.pw_gid)
        prefix = [
            "setpriv",
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
        ]

    def run(program: str, *args: str) -> None:
        out = subprocess.run(
            [*prefix, str(bin_dir / program), *args], capture_output=True, cwd=dir, timeout=180
        )
        if out.returncode != 0:
            pytest.fail(f"{program}: {out.stdout.decode()} {out.stderr.decode()}")

    data = dir / "data"
    run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8")
    with open(data / "postgresql.conf", "a") as f:
        f.write(
            f"\nlisten_addresses = ''\nunix_socket_directories = '{dir}'\nport = 5432\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
    run("pg_ctl", "-D", str(data), "-l", str(dir / "server.log"), "-w", "-t", "120", "start")
    try:
        run("createdb", "-h", str(dir), "-p", "5432", "-U", "postgres", "runegrid_sdk")
        yield f"postgresql://postgres@{quote(str(dir), safe='')}:5432/runegrid_sdk"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answer(url: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}/v1/jobs", timeout=5)
    except httpx.TransportError:
        return None


def _is_active(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


class _Procs:
    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        with open(self.dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [find_binary(REPO), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUNEGRID_LOG": "info", "NO_COLOR": "1", **(env or {})},
            )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def logs(self) -> str:
        return "\n".join(
            f"---- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.dir.glob("*.log"))
        )


def test_failover_between_coordinators(pg_database: str, module: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="runegrid-failover-"))
    procs = _Procs(tmp)
    urls = {name: f"http://127.0.0.1:{_free_port()}" for name in ("a", "b")}

    def serve(name: str) -> None:
        procs.start(
            f"coordinator-{name}",
            "serve",
            "--listen",
            urls[name].removeprefix("http://"),
            "--store",
            pg_database,
            "--lease-ttl-ms",
            "1500",
            "--heartbeat-ms",
            "300",
            "--data",
            str(tmp / name),
        )

    try:
        serve("a")
        _wait("coordinator a active", 60, lambda: _is_active(urls["a"]) or None)
        serve("b")
        standby = _wait(
            "coordinator b standing by",
            60,
            lambda: (
                (r := _answer(urls["b"])) is not None
                and r.status_code == 503
                and r.headers.get("x-runegrid-active")
                and r
                or None
            ),
        )
        assert standby.headers["x-runegrid-active"] == urls["a"]
        assert standby.json()["error"]["code"] == "standby"
        token = (tmp / "a" / "admin.token").read_text().strip()
        procs.start(
            "worker",
            "worker",
            "--coordinator",
            f"{urls['a']},{urls['b']}",
            "--data",
            str(tmp / "worker"),
            "--slots",
            "2",
            env={"RUNEGRID_TOKEN": token},
        )
        echo = module("echo").read_bytes()
        # The standby first: the SDK must find the active one.
        with Grid(f"{urls['b']},{urls['a']}", token, timeout=120) as grid:
            assert grid.urls == [urls["b"], urls["a"]]
            program = grid.upload(echo)
            job = grid.submit(program, [{"args": ["1"]}], policy="none")
            assert [r.stdout for r in grid.wait(job)] == ["arg=1\nstdin="]
            assert grid.url == urls["a"]

            procs.kill("coordinator-a")
            # The next call (sync) waits out the takeover and goes to b.
            status = grid.job(job)
            assert status["job"] == job, status
            assert grid.url == urls["b"]
            # (Its results may not have been committed before the kill: b then runs it again.)
            assert [r.stdout for r in grid.wait(job)] == ["arg=1\nstdin="]
            assert _is_active(urls["b"])
            # The job acknowledged before the kill is there, and new work runs on b.
            job2 = grid.submit(program, [{"args": ["2"]}], policy="none")
            assert [r.stdout for r in grid.wait(job2)] == ["arg=2\nstdin="]
            events = list(grid.events(job2, timeout=60))
            assert events[-1]["type"] == "done"

        # The async form, from a fresh client that starts at the dead coordinator.
        async def async_calls() -> None:
            async with Grid(f"{urls['a']},{urls['b']}", token, timeout=120) as agrid:
                status = await agrid.job_async(job)
                assert status["job"] == job and status["state"] == "done", status
                assert agrid.url == urls["b"]
                job3 = await agrid.submit_async(program, [{"args": ["3"]}], policy="none")
                results = await agrid.wait_async(job3)
                assert [r.stdout for r in results] == ["arg=3\nstdin="]
                events = [e async for e in agrid.events_async(job3, timeout=60)]
                assert events[-1]["type"] == "done"

        anyio.run(async_calls)

        # Restarted, a stands by and names b; an async client given a first goes to b.
        serve("a")
        _wait(
            "coordinator a standing by",
            60,
            lambda: (
                (r := _answer(urls["a"])) is not None
                and r.headers.get("x-runegrid-active") == urls["b"]
                or None
            ),
        )

        async def via_standby() -> None:
            async with Grid(f"{urls['a']},{urls['b']}", token, timeout=120) as agrid:
                assert (await agrid.job_async(job))["state"] == "done"
                assert agrid.url == urls["b"]

        anyio.run(via_standby)
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_no_coordinator_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several URLs, none reachable: a request gives up after the failover wait with an
    ``ApiError`` ``standby`` naming them (one URL: the connection error itself)."""
    import runegrid._jobs

    monkeypatch.setattr(runegrid._jobs, "FAILOVER_WAIT", 1.0)
    dead = [f"http://127.0.0.1:{_free_port()}" for _ in range(2)]
    with Grid(",".join(dead) + "/", "t", timeout=5) as grid:
        assert grid.urls == dead
        assert repr(grid) == f"Grid({','.join(dead)!r})"
        with pytest.raises(ApiError) as e:
            grid.job(1)
        assert e.value.code == "standby"
        assert dead[0] in e.value.message and dead[1] in e.value.message
    with Grid(dead[0], "t", timeout=5) as grid, pytest.raises(ConnectionFailed):
        grid.job(1)

"""A local grid for tests, benchmarks and trying things out: a coordinator and native worker
processes on loopback, started from the ``runegrid`` binary."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import RunegridError
from .grid import Grid


def find_binary(repo: str | os.PathLike[str] | None = None) -> str:
    """The ``runegrid`` binary: ``$RUNEGRID_BIN``, else ``REPO/target/release/runegrid``, else
    ``$CARGO_TARGET_DIR/release/runegrid``, else ``runegrid`` on ``PATH``."""
    env = os.environ.get("RUNEGRID_BIN")
    if env:
        return env
    candidates = []
    if repo is not None:
        candidates.append(Path(repo) / "target" / "release" / "runegrid")
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(Path(target) / "release" / "runegrid")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("runegrid")
    if found:
        return found
    raise FileNotFoundError(
        "no runegrid binary: set RUNEGRID_BIN, or build it (cargo build --release); looked in "
        + ", ".join(str(c) for c in candidates)
    )


#: The file name of the model ``scripts/fetch-model.sh`` fetches.
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_model(repo: str | os.PathLike[str] | None = None) -> Path | None:
    """The model file to serve: ``$RUNEGRID_MODEL``, else ``$RUNEGRID_MODELS/<MODEL_FILE>``,
    else ``REPO/.runegrid/models/<MODEL_FILE>`` (where ``scripts/fetch-model.sh`` puts it);
    ``None`` when that file does not exist."""
    env = os.environ.get("RUNEGRID_MODEL")
    if env:
        path = Path(env)
    elif os.environ.get("RUNEGRID_MODELS"):
        path = Path(os.environ["RUNEGRID_MODELS"]) / MODEL_FILE
    elif repo is not None:
        path = Path(repo) / ".runegrid" / "models" / MODEL_FILE
    else:
        return None
    return path if path.is_file() else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM when the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class LocalGrid:
    """``runegrid serve --listen 127.0.0.1:0`` and ``workers`` worker processes of ``slots``
    slots each, in a temporary directory (or ``data_dir``). :meth:`start` returns once the
    workers are connected; :meth:`stop` (or leaving the ``with`` block) ends them all.

    ``model`` is a model file (GGUF) the coordinator serves for :meth:`Grid.chat
    <runegrid.Grid.chat>` (``serve --model FILE``; see :func:`find_model`); ``serve_args`` are
    more arguments of ``runegrid serve``.

    >>> with LocalGrid(workers=2) as local, local.grid() as grid:
    ...     grid.wasm("prog.wasm")(args=["1"])
    """

    def __init__(
        self,
        workers: int = 2,
        slots: int = 2,
        *,
        binary: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        serve_args: Sequence[str] = (),
        model: str | os.PathLike[str] | None = None,
        log: str = "info",
        start_timeout: float = 60.0,
    ) -> None:
        self.binary = binary or find_binary()
        self.workers = workers
        self.slots = slots
        self.serve_args = list(serve_args)
        self.model = Path(model) if model is not None else None
        if self.model is not None:
            self.serve_args += ["--model", str(self.model)]
        self.log = log
        self.start_timeout = start_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="runegrid-local-")
            data_dir = self._tmp.name
        self.dir = Path(data_dir)
        self.url = ""
        self.token = ""
        self._coordinator: subprocess.Popen[bytes] | None = None
        self._workers: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LocalGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "ab")
        try:
            return subprocess.Popen(
                [self.binary, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUNEGRID_LOG": self.log, "NO_COLOR": "1", **(env or {})},
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            log.close()

    def start(self) -> LocalGrid:
        """Starts the coordinator and the workers; waits until the workers are connected."""
        atexit.register(self.stop)
        data = self.dir / "coordinator"
        data.mkdir(parents=True, exist_ok=True)
        url_file, token_file = data / "coordinator.url", data / "admin.token"
        url_file.unlink(missing_ok=True)
        self._coordinator = self._spawn(
            "coordinator",
            ["serve", "--listen", "127.0.0.1:0", "--data", str(data), *self.serve_args],
        )
        deadline = time.monotonic() + self.start_timeout
        while not (url_file.is_file() and token_file.is_file() and url_file.read_text().strip()):
            self._check_alive(self._coordinator, "coordinator")
            if time.monotonic() > deadline:
                self.stop()
                raise RunegridError(f"the coordinator did not start in {self.start_timeout} s")
            time.sleep(0.02)
        self.url = url_file.read_text().strip()
        self.token = token_file.read_text().strip()
        for _ in range(self.workers):
            self.add_worker()
        self.wait_workers(self.workers)
        return self

    def add_worker(
        self, slots: int | None = None, name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Starts one more worker process (it connects on its own; see :meth:`wait_workers`)."""
        name = name or f"worker-{len(self._workers) + 1}"
        data = self.dir / name
        proc = self._spawn(
            name,
            [
                "worker",
                "--coordinator",
                self.url,
                "--data",
                str(data),
                "--name",
                name,
                "--slots",
                str(slots or self.slots),
            ],
            env={"RUNEGRID_TOKEN": self.token},
        )
        self._workers.append(proc)
        return proc

    def wait_workers(self, n: int, timeout: float | None = None) -> None:
        """Waits until ``n`` workers are connected."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        with self.grid() as g:
            while True:
                try:
                    if sum(1 for w in g.workers() if w.get("connected")) >= n:
                        return
                except RunegridError:
                    pass
                for i, w in enumerate(self._workers):
                    self._check_alive(w, f"worker-{i + 1}")
                if time.monotonic() > deadline:
                    raise RunegridError(f"{n} workers did not connect in time:\n{self.logs()}")
                time.sleep(0.05)

    def _check_alive(self, proc: subprocess.Popen[bytes], name: str) -> None:
        if proc.poll() is not None:
            raise RunegridError(f"{name} exited with {proc.returncode}:\n{self.logs()}")

    def grid(self, **options: Any) -> Grid:
        """A :class:`Grid` connected to this coordinator with its admin token."""
        return Grid(self.url, self.token, **options)

    def logs(self, tail: int = 3000) -> str:
        """The end of every process's log."""
        out = []
        for f in sorted(self.dir.glob("*.log")):
            text = f.read_text(errors="replace")
            out.append(f"==== {f.name}\n{text[-tail:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """Stops the workers, then the coordinator (SIGTERM, then SIGKILL after 10 s), and
        removes the temporary directory."""
        atexit.unregister(self.stop)
        procs = [*self._workers, *([self._coordinator] if self._coordinator else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._workers, self._coordinator = [], None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

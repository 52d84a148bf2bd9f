"""Fixtures: one real local grid (a coordinator and three native workers started from the
``runegrid`` binary) for the whole session.

The binary is ``$RUNEGRID_BIN``, else ``<repo>/target/release/runegrid``, else
``$CARGO_TARGET_DIR/release/runegrid``, else ``runegrid`` on ``PATH``.

The coordinator serves the chat model when its file is there (``$RUNEGRID_MODEL``, else
``$RUNEGRID_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf``, else
``<repo>/.runegrid/models/SmolLM2-135M-Instruct.Q4_1.gguf``, as ``scripts/fetch-model.sh``
fetches it); without it the ``chat`` tests skip, or fail when ``$RUNEGRID_REQUIRE_MODEL`` is set.

The workers use the machine's Vulkan adapter for GPU tasks (Mesa's lavapipe without a GPU);
without one the tests that run kernels (``gpu_grid``) skip, or fail when
``$RUNEGRID_REQUIRE_GPU`` is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runegrid import Grid
from runegrid.local import MODEL_FILE, LocalGrid, find_binary, find_model

REPO = Path(__file__).resolve().parents[3]
MODULES = Path(__file__).resolve().parent / "modules"

#: Every call made through the ``grid`` fixture gives up (and fails its test) after this long,
#: so that a broken grid fails the suite instead of hanging it.
CALL_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def model_file() -> Path | None:
    """The chat model's file, or ``None`` when it is not there."""
    return find_model(REPO)


@pytest.fixture(scope="session")
def local(request: pytest.FixtureRequest, model_file: Path | None) -> Iterator[LocalGrid]:
    grid = LocalGrid(
        workers=3, slots=2, binary=find_binary(REPO), model=model_file, start_timeout=60
    )
    grid.start()
    try:
        yield grid
    finally:
        if request.session.testsfailed:
            capture = request.config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():
                sys.stderr.write(f"\n---- logs of the local grid ----\n{grid.logs()}\n")
        grid.stop()


@pytest.fixture
def new_grid(local: LocalGrid) -> Callable[[], Grid]:
    """Makes a :class:`Grid` for the local grid (e.g. for ``async with``)."""
    return lambda: local.grid(timeout=CALL_TIMEOUT)


@pytest.fixture
def grid(new_grid: Callable[[], Grid]) -> Iterator[Grid]:
    with new_grid() as g:
        yield g


@pytest.fixture
def chat_grid(local: LocalGrid, new_grid: Callable[[], Grid]) -> Iterator[Grid]:
    """A :class:`Grid` whose coordinator serves the chat model (the test skips without it, or
    fails when ``$RUNEGRID_REQUIRE_MODEL`` is set)."""
    if local.model is None:
        reason = (
            f"no model file: set RUNEGRID_MODEL or RUNEGRID_MODELS, or run "
            f"scripts/fetch-model.sh (looked for {REPO / '.runegrid' / 'models' / MODEL_FILE})"
        )
        if os.environ.get("RUNEGRID_REQUIRE_MODEL"):
            pytest.fail(f"RUNEGRID_REQUIRE_MODEL is set, but {reason}")
        pytest.skip(reason)
    with new_grid() as g:
        yield g


@pytest.fixture(scope="session")
def gpu_workers(local: LocalGrid) -> int:
    """How many of the local grid's workers have a GPU (lavapipe counts: it is software)."""
    with local.grid() as g:
        return sum(1 for w in g.workers() if w.get("connected") and w["capabilities"].get("gpu"))


@pytest.fixture
def gpu_grid(gpu_workers: int, new_grid: Callable[[], Grid]) -> Iterator[Grid]:
    """A :class:`Grid` whose workers run GPU kernels (the test skips without a Vulkan adapter,
    or fails when ``$RUNEGRID_REQUIRE_GPU`` is set)."""
    if gpu_workers < 2:
        reason = (
            f"{gpu_workers} workers have a GPU (a Vulkan adapter): "
            "apt-get install mesa-vulkan-drivers"
        )
        if os.environ.get("RUNEGRID_REQUIRE_GPU"):
            pytest.fail(f"RUNEGRID_REQUIRE_GPU is set, but {reason}")
        pytest.skip(reason)
    with new_grid() as g:
        yield g


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def module() -> Callable[[str], Path]:
    """The path of a test module (``tests/modules/NAME.wat``)."""
    return lambda name: MODULES / f"{name}.wat"

"""GPU kernels: declarations and packing without a grid, then WGSL kernels run on the local
grid's workers (Mesa's lavapipe where there is no GPU: a software adapter, so every kernel
here says ``allow_software=True``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from runegrid import (
    ApiError,
    CallTimeout,
    GpuBuffer,
    GpuResult,
    Grid,
    InvalidKernel,
    OutOfFuel,
    TaskError,
    _jobs,
    gpu,
)

ADD = """
@group(0) @binding(0) var<storage, read> a: u32;
@group(0) @binding(1) var<storage, read> b: u32;
@group(0) @binding(2) var<storage, read_write> sum: u32;
@compute @workgroup_size(1) fn main() { sum = a + b; }
"""

VADD = """
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> sum: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&sum)) { sum[id.x] = a[id.x] + b[id.x]; }
}
"""

#: A uniform, a buffer updated in place and two outputs (so a call returns a dict).
SCALE = """
@group(0) @binding(0) var<uniform> k: u32;
@group(0) @binding(1) var<storage, read_write> xs: array<u32>;
@group(0) @binding(2) var<storage, read_write> total: atomic<u32>;
@group(0) @binding(3) var<storage, read_write> count: u32;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&xs)) { xs[id.x] = xs[id.x] * k; atomicAdd(&total, xs[id.x]); }
    if (id.x == 0u) { count = arrayLength(&xs); }
}
"""

SPIN = """
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var x = id.x;
    loop { x = x + 1u; }
    out[id.x] = x;
}
"""

ADD_BUFFERS = {"a": "u32", "b": "u32", "sum": "out u32"}


@pytest.fixture
def requests(gpu_grid: Grid) -> Iterator[list[tuple[str, str]]]:
    """The (method, path) of every API request made through ``gpu_grid``."""
    seen: list[tuple[str, str]] = []
    real = gpu_grid.request

    def request(method: str, path: str, **kw: Any) -> Any:
        seen.append((method, path))
        return real(method, path, **kw)

    gpu_grid.request = request  # type: ignore[method-assign]
    yield seen


# ------------------------------------------------------------------------- without a grid


@pytest.fixture
def offline() -> Iterator[Grid]:
    """A grid that cannot be reached: whatever a test sends raises ConnectionFailed."""
    with Grid("http://127.0.0.1:9", "t") as g:
        yield g


def test_buffer_declarations() -> None:
    parse = GpuBuffer.parse
    assert parse("u32") == GpuBuffer("input", "u32")
    assert parse("uint32") == parse("in u32") == gpu.input("u32")
    assert parse(None) == parse("in") == GpuBuffer("input")
    assert parse("out u32") == GpuBuffer("output", "u32", ())
    assert parse("out f32[64, 64]") == gpu.output("f32", (64, 64))
    assert parse("out u8[16]").nbytes == 16
    assert parse("uniform u32") == gpu.uniform("u32")
    assert parse("inout") == GpuBuffer("inout")
    assert parse("inout float16") == gpu.inout("f16")
    with pytest.raises(ValueError, match="role"):
        parse("sideways u32")
    with pytest.raises(TypeError, match="unknown dtype"):
        parse("u33")
    with pytest.raises(TypeError, match="only outputs take a shape"):
        parse("u32[4]")
    with pytest.raises(TypeError, match="needs a dtype"):
        parse("out")


def test_kernel_json_bindings_and_dispatches(offline: Grid) -> None:
    grid = offline
    k = grid.gpu(
        VADD,
        buffers={"a": "f32", "b": gpu.input("f32", binding=5, group=1), "sum": "out f32[100]"},
        dispatch=2,
        loop_budget=1000,
    )
    spec = json.loads(k.kernel_json)
    assert spec == {
        "shader": VADD,
        "entry_point": "main",
        "buffers": [
            {"name": "a", "group": 0, "binding": 0, "role": "input"},
            {"name": "b", "group": 1, "binding": 5, "role": "input"},
            {"name": "sum", "group": 0, "binding": 2, "role": "output", "size": 400},
        ],
        "dispatches": [[2, 1, 1]],
        "loop_budget": 1000,
    }
    assert k.program == hashlib.sha256(k.kernel_json).hexdigest()
    assert (k.inputs, k.outputs) == (("a", "b"), ("sum",))
    assert gpu.dispatches((4, 2)) == [[4, 2, 1]]
    assert gpu.dispatches([(1, 1, 1), [8]]) == [[1, 1, 1], [8, 1, 1]]
    with pytest.raises(ValueError, match="multiple of 4"):
        grid.gpu(VADD, buffers={"out": "out u8[3]"})
    with pytest.raises(ValueError, match="dispatch"):
        grid.gpu(VADD, buffers=ADD_BUFFERS, dispatch=(1, 2, 3, 4))


def test_buffers_are_checked_before_anything_is_sent(offline: Grid) -> None:
    grid = offline
    add = grid.gpu(ADD, buffers=ADD_BUFFERS, allow_software=True)
    with pytest.raises(TypeError, match="missing input buffer 'b'"):
        add(1)
    with pytest.raises(TypeError, match="missing input buffers 'a', 'b'"):
        add()
    with pytest.raises(TypeError, match="takes 2 input buffers"):
        add(1, 2, 3)
    with pytest.raises(TypeError, match="'sum' is an output"):
        add(1, 2, sum=3)
    with pytest.raises(TypeError, match="unknown buffer or option 'c'"):
        add(1, 2, c=3)
    with pytest.raises(TypeError, match="given twice"):
        add(1, 2, a=3)
    with pytest.raises(TypeError, match="not a string"):
        add("1", 2)
    with pytest.raises(ValueError, match="cannot pack u32"):
        add(-1, 2)
    raw = grid.gpu(ADD, buffers={"a": None, "b": None, "sum": "out u32"})
    with pytest.raises(TypeError, match="no dtype to pack numbers"):
        raw(1, 2)
    with pytest.raises(TypeError, match="a tuple of them or a dict"):
        add.map([1, 2])
    assert not _jobs.is_uploaded(grid, add.program)


def test_values_round_trip_without_numpy() -> None:
    """Numbers are packed little-endian as the declared dtype and read back likewise."""
    from runegrid.gpu import _pack, _unpack

    data, form, dtype, shape = _pack("x", gpu.input("f16"), [[1.5, -2.0], [0.25, 8.0]])
    assert (form, dtype, shape) == ("python", "f16", (2, 2))
    assert _unpack(data, "f16", shape, "python", "x") == [[1.5, -2.0], [0.25, 8.0]]
    assert _pack("x", gpu.input("i32"), -2)[0] == b"\xfe\xff\xff\xff"
    assert _unpack(b"\x01\x00\x00\x00\x02\x00\x00\x00", "u32", (2,), "python", "x") == [1, 2]
    assert _unpack(b"\x07\x00\x00\x00", "u32", (), "python", "x") == 7
    assert _pack("x", gpu.input(), memoryview(b"abcd"))[:2] == (b"abcd", "bytes")
    with pytest.raises(ValueError, match="different lengths"):
        _pack("x", gpu.input("u32"), [[1, 2], [3]])


# ------------------------------------------------------------------------- on the grid


@pytest.mark.gpu
def test_remote_gpu_add(gpu_grid: Grid, requests: list[tuple[str, str]]) -> None:
    """The README's two lines: a kernel adding two u32 values, run on a worker's GPU."""
    RemoteGPUAdd = gpu_grid.gpu(ADD, buffers=ADD_BUFFERS, allow_software=True)
    assert RemoteGPUAdd(1, 2) == 3
    assert RemoteGPUAdd(a=40, b=2) == 42
    assert RemoteGPUAdd({"a": 2**32 - 1, "b": 2}) == 1  # u32 arithmetic wraps
    assert RemoteGPUAdd(b"\x01\x00\x00\x00", bytearray(b"\x02\x00\x00\x00")) == b"\x03\0\0\0"
    r = RemoteGPUAdd.call(5, 6, policy="quorum", replicas=2, agree=2)
    assert isinstance(r, GpuResult)
    assert r.value == 11 and r.buffers == {"sum": b"\x0b\x00\x00\x00"}
    assert r.task.ok and r.task.acceptance == "quorum" and r.task.attempts >= 2
    assert r.task.fuel is not None and r.task.fuel > 0  # a GPU task's fuel is its work
    job = gpu_grid.job(r.task.job)
    assert job["program"] == RemoteGPUAdd.program
    # Uploaded once, whatever the number of calls and of kernel objects with that source.
    again = gpu_grid.gpu(ADD, buffers=ADD_BUFFERS, allow_software=True)
    assert again.program == RemoteGPUAdd.program
    assert again(7, 8) == 15
    assert requests.count(("POST", "/v1/programs")) == 1


@pytest.mark.gpu
def test_vector_add_with_numpy(gpu_grid: Grid) -> None:
    np = pytest.importorskip("numpy")
    n = 1000
    vadd = gpu_grid.gpu(
        VADD,
        buffers={"a": "f32", "b": np.float32, "sum": gpu.output(np.float32, n)},
        dispatch=(n + 63) // 64,
        allow_software=True,
    )
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 0.5, dtype=np.float32)
    out = vadd(a, b)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32 and out.shape == (n,)
    assert np.array_equal(out, a + b)
    # Arrays of another dtype are cast to the declared one; a float array into u32 is not.
    assert np.array_equal(vadd(np.arange(n), np.ones(n, dtype=np.float64)), a + 1)
    with pytest.raises(TypeError, match="astype"):
        gpu_grid.gpu(ADD, buffers=ADD_BUFFERS)(np.float32(1), 2)
    # A uniform, an inout buffer (returned in the shape it was given) and two outputs.
    scale = gpu_grid.gpu(
        SCALE,
        buffers={"k": "uniform u32", "xs": "inout u32", "total": "out u32", "count": "out u32"},
        allow_software=True,
    )
    got = scale(np.uint32(2), np.arange(6).reshape(2, 3))
    assert got["xs"].shape == (2, 3) and got["xs"].dtype == np.uint32
    assert got["xs"].tolist() == [[0, 2, 4], [6, 8, 10]]
    assert (got["total"], got["count"]) == (30, 6)


@pytest.mark.gpu
def test_map_runs_one_job(gpu_grid: Grid, requests: list[tuple[str, str]]) -> None:
    add = gpu_grid.gpu(ADD, buffers=ADD_BUFFERS, allow_software=True)
    assert add.map([(i, 10 * i) for i in range(8)], progress=False) == [11 * i for i in range(8)]
    assert requests.count(("POST", "/v1/jobs")) == 1
    # Item forms: a tuple, a dict; several outputs come back as a dict.
    scale = gpu_grid.gpu(
        SCALE,
        buffers={"k": "uniform u32", "xs": "inout u32", "total": "out u32", "count": "out u32"},
        allow_software=True,
    )
    out = scale.map([(3, [1, 2, 3, 4]), {"k": 1, "xs": [5]}], progress=False)
    assert out == [
        {"xs": [3, 6, 9, 12], "total": 30, "count": 4},
        {"xs": [5], "total": 5, "count": 1},
    ]
    assert add.map([]) == []


@pytest.mark.gpu
@pytest.mark.anyio
async def test_async_calls(gpu_grid: Grid, new_grid) -> None:
    async with new_grid() as grid:
        add = grid.gpu(ADD, buffers=ADD_BUFFERS, allow_software=True)
        assert await add.remote(1, 2) == 3
        r = await add.call_async(2, 2)
        assert r.value == 4 and r.task.ok
        assert await add.map_async([(1, 1), (2, 2)], progress=False) == [2, 4]


def test_invalid_wgsl_is_refused_with_its_line(grid: Grid) -> None:
    broken = grid.gpu(ADD.replace("a + b", "a +* b"), buffers=ADD_BUFFERS, allow_software=True)
    with pytest.raises(InvalidKernel) as e:
        broken(1, 2)
    err = e.value
    assert isinstance(err, ApiError)
    assert (err.code, err.status) == ("invalid_kernel", 400)
    assert "does not parse" in err.message
    assert (err.line, err.column) == (5, 50)
    assert "a +* b" in str(err)
    # Buffers that do not match the shader's bindings.
    with pytest.raises(InvalidKernel, match=r"@binding\(2\)") as e:
        grid.gpu(ADD, buffers={"a": "u32", "b": "u32"}).upload()
    assert e.value.line is None


@pytest.mark.gpu
def test_endless_loop_ends_out_of_fuel(gpu_grid: Grid) -> None:
    spin = gpu_grid.gpu(SPIN, buffers={"out": "out u32[4]"}, allow_software=True)
    with pytest.raises(OutOfFuel) as e:
        spin()
    err = e.value
    assert isinstance(err, TaskError)
    assert err.status is not None and err.status.kind == "out_of_fuel"
    assert err.state == "failed" and err.result.acceptance in ("quorum", "trusted")
    assert "loop budget" in str(err)
    # With check=False the result comes back, with what the run left in its buffers.
    small = gpu_grid.gpu(SPIN, buffers={"out": "out u32[4]"}, allow_software=True, loop_budget=10)
    r = small.call(check=False, returns="python")
    assert r.task.status is not None and r.task.status.kind == "out_of_fuel"
    assert isinstance(r.value, list) and len(r.value) == 4


@pytest.mark.gpu
def test_software_adapters_only_when_allowed(gpu_grid: Grid) -> None:
    """Without allow_software a kernel waits for a hardware GPU (the test machines have none)."""
    adapters = [w["capabilities"].get("gpu") for w in gpu_grid.workers()]
    if any(a and not a["software"] for a in adapters):
        pytest.skip("a worker has a hardware GPU")
    add = gpu_grid.gpu(ADD, buffers=ADD_BUFFERS)
    with pytest.raises(CallTimeout) as e:
        add(1, 2, timeout=1.0)
    assert gpu_grid.job(e.value.job)["state"] == "cancelled"

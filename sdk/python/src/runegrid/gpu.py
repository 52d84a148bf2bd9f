"""GPU kernels: WGSL compute shaders run on the grid's GPUs (:meth:`Grid.gpu
<runegrid.Grid.gpu>`), and the declarations of their buffers.

A kernel is uploaded once as a program (its JSON: shader, entry point, buffers, dispatches,
loop budget; named by the SHA-256 of that JSON). Each call is a task that gives the bytes of
the kernel's input buffers and gets its output buffers back (the task's output files, named
after them), verified like any task: replicas on distinct workers must return the same bytes.

Buffers are declared in binding order, by name: a dtype alone (``"u32"``) is an input, and
:func:`output` (or ``"out u32[1000]"``), :func:`uniform` and :func:`inout` declare the other
roles::

    add = grid.gpu(SHADER, buffers={"a": "u32", "b": "u32", "sum": "out u32"})
    add(1, 2)        # 3
"""

from __future__ import annotations

import base64
import copy
import hashlib
import math
import numbers
import os
import re
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from . import _jobs
from . import _protocol as p
from ._jobs import JobClient
from .calls import _stderr_is_terminal, _Uploaded
from .errors import OutOfFuel, ProtocolError, TaskError, task_error
from .options import OPTION_NAMES, Options
from .results import TaskResult

#: The element types a buffer may be declared with: name → (``struct`` format, numpy code).
DTYPES: dict[str, tuple[str, str]] = {
    "u8": ("B", "u1"),
    "i8": ("b", "i1"),
    "u16": ("H", "u2"),
    "i16": ("h", "i2"),
    "u32": ("I", "u4"),
    "i32": ("i", "i4"),
    "u64": ("Q", "u8"),
    "i64": ("q", "i8"),
    "f16": ("e", "f2"),
    "f32": ("f", "f4"),
    "f64": ("d", "f8"),
}
_ALIASES = {
    "uint8": "u8",
    "int8": "i8",
    "uint16": "u16",
    "int16": "i16",
    "uint32": "u32",
    "int32": "i32",
    "uint64": "u64",
    "int64": "i64",
    "float16": "f16",
    "half": "f16",
    "float32": "f32",
    "float64": "f64",
}

#: The roles of a buffer, as the coordinator names them.
ROLES = ("input", "uniform", "output", "inout")
_ROLE_WORDS = {
    "in": "input",
    "input": "input",
    "uniform": "uniform",
    "out": "output",
    "output": "output",
    "inout": "inout",
}

#: What a call's outputs come back as (``None``: the form its inputs were given in).
RETURNS = ("bytes", "numpy", "python")

#: Options of a kernel's calls that are not :class:`~runegrid.Options` (they belong to the
#: job's ``gpu`` field, or to how outputs are read back).
KERNEL_OPTIONS = frozenset({"verify", "allow_software", "returns"})


def _numpy(why: str | None = None) -> Any:
    """numpy, imported on demand; ``None`` when it is not installed (an :class:`ImportError`
    saying ``why`` it is needed, when given)."""
    try:
        import numpy
    except ImportError:
        if why is not None:
            raise ImportError(f"{why} needs numpy (pip install numpy)") from None
        return None
    return numpy


def _is_numpy(value: Any) -> bool:
    """Whether ``value`` is a numpy array or scalar (without importing numpy: if it was never
    imported, nothing can be one)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, (np.ndarray, np.generic))


def dtype_name(dtype: Any) -> str:
    """The name (``u32``, ``f32``, ...; see :data:`DTYPES`) of a dtype given by name
    (``"u32"``, ``"uint32"``, ``"float32"``) or, with numpy, as a numpy dtype or type
    (``np.float32``)."""
    if isinstance(dtype, str):
        name = dtype.strip().lower()
        name = _ALIASES.get(name, name)
        if name in DTYPES:
            return name
    if dtype not in (int, float, bool, complex):
        np = _numpy()
        if np is not None:
            try:
                dt = np.dtype(dtype)
            except (TypeError, ValueError):
                dt = None
            if dt is not None and dt.kind in "uif":
                name = f"{dt.kind}{dt.itemsize * 8}"
                if name in DTYPES:
                    return name
    raise TypeError(
        f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)} (or a numpy dtype of those)"
    )


def _itemsize(dtype: str) -> int:
    return struct.calcsize("<" + DTYPES[dtype][0])


def _count(x: Any) -> int | None:
    """``x`` as an int if it is an integer (a numpy one too), not a bool; else ``None``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        return None
    return int(x)


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    dims = [shape] if _count(shape) is not None else list(shape)  # type: ignore[arg-type]
    out = tuple(_count(d) or 0 for d in dims)
    if any(d < 1 for d in out):
        raise ValueError(f"a shape is positive ints, not {shape!r}")
    return out


@dataclass(frozen=True)
class GpuBuffer:
    """One buffer a kernel binds: its ``role`` (``input``, ``uniform``, ``output``,
    ``inout``), its element ``dtype`` (see :data:`DTYPES`; how numbers are packed and read
    back; ``None``: bytes and numpy arrays only), an output's ``shape`` (its size is the
    dtype's size times the elements: ``()`` one element), and where the shader binds it:
    ``@group(group) @binding(binding)`` (``binding`` ``None``: its position among the
    kernel's buffers).

    Made by :func:`input`, :func:`uniform`, :func:`output`, :func:`inout`, or from a string
    (``"u32"``, ``"out f32[64, 64]"``; see :meth:`parse`).
    """

    role: str
    dtype: str | None = None
    shape: tuple[int, ...] = ()
    binding: int | None = None
    group: int = 0

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.role == "output" and self.dtype is None:
            raise TypeError("an output buffer needs a dtype (and a shape unless it is one value)")
        if self.role != "output" and self.shape:
            raise TypeError(
                f"only outputs take a shape: an {self.role} buffer's size is what the call gives"
            )
        for what in ("binding", "group"):
            v = getattr(self, what)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{what} must be an int >= 0, not {v!r}")

    @property
    def supplied(self) -> bool:
        """Whether a call gives its bytes (every role but ``output``)."""
        return self.role != "output"

    @property
    def returned(self) -> bool:
        """Whether it comes back from a call (``output`` and ``inout``)."""
        return self.role in ("output", "inout")

    @property
    def nbytes(self) -> int | None:
        """An output's size in bytes (``None`` for the other roles)."""
        if self.role != "output" or self.dtype is None:
            return None
        return _itemsize(self.dtype) * math.prod(self.shape)

    @classmethod
    def parse(cls, spec: Any) -> GpuBuffer:
        """A declaration from its short forms: a :class:`GpuBuffer`; ``None`` (an input of
        bytes); a dtype (an input of it: ``"u32"``, ``np.float32``); or a string
        ``"[ROLE ]DTYPE[SHAPE]"`` with ROLE ``in`` (the default), ``uniform``, ``out`` or
        ``inout`` and a SHAPE for outputs only: ``"out u32"`` (one value),
        ``"out u32[1000]"``, ``"out f32[64, 64]"``, ``"uniform u32"``, ``"inout f32"``
        (``"in"``, ``"uniform"`` and ``"inout"`` alone: bytes, no dtype)."""
        if isinstance(spec, GpuBuffer):
            return spec
        if spec is None:
            return cls("input")
        if not isinstance(spec, str):
            return cls("input", dtype_name(spec))
        m = re.fullmatch(r"\s*(?:(\w+)\s+)?(\w+)?\s*(?:\[([\d,\s]*)\])?\s*", spec)
        if m is None or (m.group(2) is None and m.group(1) is None):
            raise ValueError(f"cannot read buffer declaration {spec!r}: write e.g. 'out u32[100]'")
        word, dtype, dims = m.groups()
        if word is None and dtype is not None and dtype.lower() in _ROLE_WORDS and not dims:
            word, dtype = dtype, None
        role = "input"
        if word is not None:
            if word.lower() not in _ROLE_WORDS:
                raise ValueError(
                    f"cannot read buffer declaration {spec!r}: the role is one of "
                    f"{', '.join(sorted(_ROLE_WORDS))}, not {word!r}"
                )
            role = _ROLE_WORDS[word.lower()]
        shape: tuple[int, ...] = ()
        if dims is not None:
            try:
                shape = _shape([int(d) for d in dims.split(",")])
            except ValueError:
                raise ValueError(
                    f"cannot read buffer declaration {spec!r}: the shape is [N] or [N, M, ...]"
                ) from None
        return cls(role, dtype_name(dtype) if dtype is not None else None, shape)

    def spec(self, name: str, position: int) -> dict[str, Any]:
        """Its entry in the kernel's JSON."""
        out: dict[str, Any] = {
            "name": name,
            "group": self.group,
            "binding": position if self.binding is None else self.binding,
            "role": self.role,
        }
        if self.role == "output":
            out["size"] = self.nbytes
        return out


def input(dtype: Any = None, *, binding: int | None = None, group: int = 0) -> GpuBuffer:
    """An input buffer (``var<storage, read>``): the call gives its bytes (bytes, a numpy
    array, or numbers packed as ``dtype``)."""
    return GpuBuffer("input", None if dtype is None else dtype_name(dtype), (), binding, group)


def uniform(dtype: Any = None, *, binding: int | None = None, group: int = 0) -> GpuBuffer:
    """A uniform buffer (``var<uniform>``): given by the call, like an input."""
    return GpuBuffer("uniform", None if dtype is None else dtype_name(dtype), (), binding, group)


def output(
    dtype: Any, shape: int | Sequence[int] = (), *, binding: int | None = None, group: int = 0
) -> GpuBuffer:
    """An output buffer (``var<storage, read_write>``, zero-filled): ``shape`` elements of
    ``dtype`` (``()``: one value), read back as such. Its size must be a multiple of 4
    bytes."""
    return GpuBuffer("output", dtype_name(dtype), _shape(shape), binding, group)


def inout(dtype: Any = None, *, binding: int | None = None, group: int = 0) -> GpuBuffer:
    """A buffer updated in place (``var<storage, read_write>``): the call gives its bytes and
    gets them back changed, in the form (and shape) it gave them."""
    return GpuBuffer("inout", None if dtype is None else dtype_name(dtype), (), binding, group)


#: A buffer's declaration: a :class:`GpuBuffer`, a string, a dtype, or ``None`` (see
#: :meth:`GpuBuffer.parse`).
BufferSpec = Any
#: One dispatch's workgroup counts: ``n`` or ``(x, y, z)`` (missing counts are 1).
Dispatch: TypeAlias = "int | Sequence[int]"


def dispatches(dispatch: Dispatch | Sequence[Dispatch]) -> list[list[int]]:
    """Workgroup counts ``[x, y, z]`` of each dispatch: an int ``n`` is ``[n, 1, 1]``, a
    sequence of 1 to 3 ints one dispatch (missing counts are 1), a sequence of those several
    dispatches, run in order."""

    def one(d: Any) -> list[int]:
        if _count(d) is not None:
            d = [d]
        dims = [_count(x) for x in d] if isinstance(d, Iterable) else [None]
        if not 1 <= len(dims) <= 3 or any(x is None or x < 0 for x in dims):
            raise ValueError(f"a dispatch is 1 to 3 workgroup counts (ints >= 0), not {d!r}")
        return [x or 0 for x in dims] + [1] * (3 - len(dims))

    if _count(dispatch) is not None:
        return [one(dispatch)]
    if isinstance(dispatch, (str, bytes)) or not isinstance(dispatch, Iterable):
        raise TypeError(f"dispatch must be (x, y, z) or a list of them, not {dispatch!r}")
    items = list(dispatch)
    if items and all(_count(d) is not None for d in items):
        return [one(items)]
    out = [one(d) for d in items]
    if not out:
        raise ValueError("a kernel needs at least one dispatch")
    return out


# ------------------------------------------------------------------------- values


@dataclass
class _Given:
    """One call's buffers, packed: the task, and what reading its outputs back needs."""

    task: dict[str, Any]
    #: ``bytes``, ``numpy`` or ``python``: what the outputs come back as.
    returns: str
    #: Inout buffers: the dtype and shape they were given with.
    inout: dict[str, tuple[str | None, tuple[int, ...] | None]] = field(default_factory=dict)


def _flatten(value: Any, name: str) -> tuple[list[Any], tuple[int, ...]]:
    """Numbers (a number, or nested lists/tuples of them) as a flat list and a shape."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value], ()
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return list(value), (len(value),)
        parts = [_flatten(v, name) for v in value]
        shapes = {s for _, s in parts}
        if len(shapes) != 1:
            raise ValueError(f"buffer {name!r}: nested lists of different lengths")
        flat = [x for f, _ in parts for x in f]
        return flat, (len(value), *shapes.pop())
    raise TypeError(
        f"buffer {name!r}: give bytes, a numpy array, or numbers, not {type(value).__name__}"
    )


def _cast(np: Any, arr: Any, dtype: str, name: str) -> Any:
    """A numpy array as ``dtype``: integers of another width or sign if every value fits,
    else as numpy's same-kind casting allows."""
    want = np.dtype(DTYPES[dtype][1])
    if arr.dtype == want:
        return arr
    if arr.dtype.kind in "iub" and want.kind in "iu":
        info = np.iinfo(want)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise ValueError(
                f"buffer {name!r}: values of {arr.dtype} do not fit in {dtype} "
                f"({int(arr.min())}..{int(arr.max())})"
            )
        return arr.astype(want)
    if np.can_cast(arr.dtype, want, "same_kind"):
        return arr.astype(want)
    raise TypeError(
        f"buffer {name!r} is {dtype}, the array is {arr.dtype}: convert it (.astype) first"
    )


def _pack(name: str, buf: GpuBuffer, value: Any) -> tuple[bytes, str, str | None, Any]:
    """A buffer's bytes, the form it was given in (``bytes``, ``numpy``, ``python``), and
    its dtype and shape as given (for an inout buffer to come back alike)."""
    if _is_numpy(value):
        np = sys.modules["numpy"]
        arr = np.asarray(value)
        if buf.dtype is not None:
            arr = _cast(np, arr, buf.dtype, name)
        dtype = dtype_name(arr.dtype) if arr.dtype.kind in "uif" else None
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        return np.ascontiguousarray(little).tobytes(), "numpy", dtype, arr.shape
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), "bytes", None, None
    if isinstance(value, str):
        raise TypeError(f"buffer {name!r}: give bytes, a numpy array, or numbers, not a string")
    if not isinstance(value, (int, float, list, tuple)):
        try:
            return memoryview(value).tobytes(), "bytes", None, None
        except TypeError:
            pass
    flat, shape = _flatten(value, name)
    if buf.dtype is None:
        raise TypeError(
            f"buffer {name!r} has no dtype to pack numbers as: declare one (e.g. 'u32'), "
            "or give bytes or a numpy array"
        )
    try:
        data = struct.pack(f"<{len(flat)}{DTYPES[buf.dtype][0]}", *flat)
    except struct.error as e:
        raise ValueError(f"buffer {name!r}: cannot pack {buf.dtype} values: {e}") from None
    return data, "python", buf.dtype, shape


def _nest(flat: Sequence[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _unpack(
    data: bytes, dtype: str, shape: tuple[int, ...] | None, returns: str, where: str
) -> Any:
    """An output's bytes as ``returns`` says: numpy array (a numpy scalar for shape ``()``)
    or Python numbers (a number, a list, nested lists)."""
    size = _itemsize(dtype)
    if shape is None:
        shape = (len(data) // size,)
    if math.prod(shape) * size != len(data):
        raise ProtocolError(
            f"{where} came back with {len(data)} bytes, not {math.prod(shape)} × {dtype}"
        )
    if returns == "numpy":
        np = _numpy("returning numpy arrays")
        arr = np.frombuffer(bytearray(data), dtype=np.dtype("<" + DTYPES[dtype][1]))
        arr = arr.astype(np.dtype(DTYPES[dtype][1]), copy=False).reshape(shape)
        return arr[()] if shape == () else arr
    flat = struct.unpack(f"<{math.prod(shape)}{DTYPES[dtype][0]}", data)
    return _nest(flat, shape)


# ------------------------------------------------------------------------- results


@dataclass(frozen=True)
class GpuResult:
    """A kernel call's outcome: ``value`` (what calling the kernel returns: the single
    output, or a dict name → output), ``buffers`` (each returned buffer's bytes, by name) and
    the underlying ``task``. With ``check=False`` a failed task's result comes back too; its
    ``buffers`` are what the run left (``value`` ``None`` when some are missing)."""

    value: Any
    buffers: Mapping[str, bytes]
    task: TaskResult


# ------------------------------------------------------------------------- kernels


class GpuKernel(_Uploaded):
    """A WGSL compute kernel, run on the grid's GPUs (a program of kind ``gpu``).

    - ``k(a, b)`` (buffers in declaration order) or ``k(a=..., b=...)`` or
      ``k({"a": ..., "b": ...})`` blocks and returns the output: the single output buffer,
      or a dict name → output when there are several;
    - ``await k.remote(...)``: the same, async;
    - ``k.call(...)`` / ``await k.call_async(...)``: a :class:`GpuResult` (value, bytes of
      each output, task result);
    - ``k.map(items)`` / ``await k.map_async(items)``: one job, one task per item (a tuple is
      the buffers in order, a dict names them, anything else is the only input), outputs in
      order.

    A buffer is bytes (``bytes``, ``bytearray``, ``memoryview``, anything with the buffer
    protocol), a numpy array (cast to the buffer's dtype when it declares one: integers when
    every value fits, else numpy's same-kind casting), or numbers (a number, or lists) packed
    as the buffer's dtype. Outputs come back in the form the inputs were given: numpy arrays
    of the declared dtype and shape when an input is a numpy array; Python numbers (a number,
    a list, nested lists) when inputs are numbers; else ``bytes``. The kernel's ``returns``
    (``"bytes"``, ``"numpy"``, ``"python"``) fixes it instead.

    Other keyword arguments of a call are options: :class:`~runegrid.Options`, plus
    ``verify``, ``allow_software`` and ``returns`` (a buffer of the same name takes
    precedence: set those with :meth:`options`). The kernel is uploaded on first use (once per
    :class:`~runegrid.Grid`), or by :meth:`upload`.
    """

    def __init__(
        self,
        grid: JobClient,
        shader: str,
        buffers: Mapping[str, BufferSpec],
        dispatch: Dispatch | Sequence[Dispatch] = (1, 1, 1),
        *,
        entry_point: str = "main",
        loop_budget: int | None = None,
        verify: str | None = None,
        allow_software: bool = False,
        returns: str | None = None,
        options: Options | None = None,
    ) -> None:
        super().__init__(grid, options if options is not None else grid.options)
        if not isinstance(shader, str):
            raise TypeError(f"shader must be WGSL text, not {type(shader).__name__}")
        if not isinstance(buffers, Mapping):
            raise TypeError("buffers must be a dict: name → declaration, in binding order")
        if not isinstance(entry_point, str) or not entry_point:
            raise TypeError("entry_point must be a function's name")
        if loop_budget is not None and (
            isinstance(loop_budget, bool) or not isinstance(loop_budget, int) or loop_budget < 1
        ):
            raise ValueError(f"loop_budget must be a positive int, not {loop_budget!r}")
        self.shader = shader
        self.entry_point = entry_point
        self.loop_budget = loop_budget
        #: The buffers by name, in declaration order.
        self.buffers: dict[str, GpuBuffer] = {}
        for name, declared in buffers.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"a buffer's name is a non-empty string, not {name!r}")
            buf = GpuBuffer.parse(declared)
            if buf.role == "output" and (buf.nbytes or 0) % 4:
                raise ValueError(
                    f"output {name!r} is {buf.nbytes} bytes: a buffer's size is a multiple "
                    "of 4 bytes"
                )
            self.buffers[name] = buf
        #: The buffers a call gives, in the order positional arguments fill them.
        self.inputs = tuple(n for n, b in self.buffers.items() if b.supplied)
        #: The buffers a call returns.
        self.outputs = tuple(n for n, b in self.buffers.items() if b.returned)
        self.dispatches = dispatches(dispatch)
        spec: dict[str, Any] = {
            "shader": shader,
            "entry_point": entry_point,
            "buffers": [b.spec(n, i) for i, (n, b) in enumerate(self.buffers.items())],
            "dispatches": self.dispatches,
        }
        if loop_budget is not None:
            spec["loop_budget"] = loop_budget
        #: The kernel's JSON, as uploaded.
        self.spec = spec
        self.kernel_json = p.dumps(spec)
        #: The program's name: SHA-256 (hex) of :attr:`kernel_json`.
        self.program = hashlib.sha256(self.kernel_json).hexdigest()
        self.verify: str | None = None
        self.allow_software = False
        self.returns: str | None = None
        self._set(verify=verify, allow_software=allow_software, returns=returns)

    def __repr__(self) -> str:
        ins = ", ".join(self.inputs)
        outs = ", ".join(self.outputs)
        return f"GpuKernel({self.program[:12]}, ({ins}) -> ({outs}))"

    # -- options

    def _set(self, **changes: Any) -> None:
        if "verify" in changes:
            v = changes["verify"]
            if v is not None and not isinstance(v, str):
                raise TypeError("verify must be 'exact', 'homogeneous' or None")
            self.verify = v
        if "allow_software" in changes:
            v = changes["allow_software"]
            if not isinstance(v, bool):
                raise TypeError("allow_software must be True or False")
            self.allow_software = v
        if "returns" in changes:
            v = changes["returns"]
            if v is not None and v not in RETURNS:
                raise ValueError(f"returns must be one of {', '.join(RETURNS)} or None, not {v!r}")
            self.returns = v

    def _with(self, changes: Mapping[str, Any]) -> tuple[GpuKernel, Options]:
        """This kernel with kernel options changed, and the call's options."""
        kernel_changes = {k: v for k, v in changes.items() if k in KERNEL_OPTIONS}
        k = self
        if kernel_changes:
            k = copy.copy(self)
            k._set(**kernel_changes)
        rest = {n: v for n, v in changes.items() if n not in KERNEL_OPTIONS}
        return k, self._opts.replace(**rest)

    def options(self, **changes: Any) -> GpuKernel:
        """A copy of this kernel with options changed: :class:`~runegrid.Options` (e.g.
        ``replicas=3, agree=2``), ``verify``, ``allow_software``, ``returns``."""
        k, opts = self._with(changes)
        if k is self:
            k = copy.copy(self)
        k._opts = opts
        return k

    def _job_fields(self) -> dict[str, Any]:
        gpu: dict[str, Any] = {"allow_software": self.allow_software}
        if self.verify is not None:
            gpu["verify"] = self.verify
        return {"gpu": gpu}

    # -- upload

    def upload(self) -> str:
        """Uploads the kernel (again); returns the program's hash. A kernel the coordinator
        refuses raises :class:`~runegrid.InvalidKernel`."""
        info = self._grid.request(
            "POST", "/v1/programs", content=self.kernel_json, read_timeout=120
        )
        return self._uploaded(info)

    async def upload_async(self) -> str:
        info = await self._grid.request_async(
            "POST", "/v1/programs", content=self.kernel_json, read_timeout=120
        )
        return self._uploaded(info)

    def _uploaded(self, info: Mapping[str, Any]) -> str:
        kind = info.get("kind", "wasm")
        if kind != "gpu":
            raise ProtocolError(
                f"the coordinator took the kernel for a program of kind {kind!r}: it does not "
                "run GPU kernels"
            )
        self.program = str(info["program"])
        _jobs.mark_uploaded(self._grid, self.program)
        return self.program

    def _label(self) -> str:
        return f"gpu {self.program[:12]}"

    # -- buffers in, outputs out

    def _bind(self, args: tuple[Any, ...], named: Mapping[str, Any]) -> dict[str, Any]:
        """A call's buffers by name, from positional and named ones."""
        if len(args) == 1 and isinstance(args[0], Mapping):
            named = {**args[0], **named}
            args = ()
        if len(args) > len(self.inputs):
            raise TypeError(
                f"the kernel takes {len(self.inputs)} input buffer"
                f"{'' if len(self.inputs) == 1 else 's'} ({', '.join(self.inputs) or 'none'}), "
                f"{len(args)} given"
            )
        given = dict(zip(self.inputs, args, strict=False))
        for name, value in named.items():
            if name in given:
                raise TypeError(f"buffer {name!r} given twice")
            if name not in self.buffers:
                raise TypeError(
                    f"the kernel has no buffer {name!r} "
                    f"(inputs: {', '.join(self.inputs) or 'none'})"
                )
            if not self.buffers[name].supplied:
                raise TypeError(f"buffer {name!r} is an output: the kernel fills it")
            given[name] = value
        missing = [n for n in self.inputs if n not in given]
        if missing:
            raise TypeError(
                f"missing input buffer{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(n) for n in missing)} (the kernel takes "
                f"{', '.join(self.inputs)})"
            )
        return given

    def _split(self, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A call's keywords: buffers, and options."""
        named, options = {}, {}
        for k, v in kwargs.items():
            if k in self.buffers:
                named[k] = v
            elif k in OPTION_NAMES or k in KERNEL_OPTIONS:
                options[k] = v
            else:
                raise TypeError(
                    f"unknown buffer or option {k!r} (buffers: {', '.join(self.buffers)}; "
                    f"options: {', '.join(sorted(OPTION_NAMES | KERNEL_OPTIONS))})"
                )
        return named, options

    def _given(self, buffers: Mapping[str, Any]) -> _Given:
        task: dict[str, str] = {}
        forms: set[str] = set()
        inout: dict[str, tuple[str | None, tuple[int, ...] | None]] = {}
        for name in self.inputs:
            buf = self.buffers[name]
            data, form, dtype, shape = _pack(name, buf, buffers[name])
            forms.add(form)
            task[name] = base64.b64encode(data).decode("ascii")
            if buf.role == "inout":
                inout[name] = (dtype, shape)
        returns = self.returns
        if returns is None:
            returns = next((f for f in ("numpy", "python") if f in forms), "bytes")
        return _Given({"buffers": task} if task else {}, returns, inout)

    def _item(self, item: Any) -> _Given:
        """One ``map`` item: a tuple (the buffers in order), a dict (by name), or the only
        input."""
        if isinstance(item, tuple):
            return self._given(self._bind(item, {}))
        if isinstance(item, Mapping):
            return self._given(self._bind((), item))
        if len(self.inputs) != 1:
            raise TypeError(
                f"a map item of a kernel with {len(self.inputs)} input buffers is a tuple of "
                f"them or a dict naming them, not {type(item).__name__}"
            )
        return self._given(self._bind((item,), {}))

    def _check(self, result: TaskResult) -> None:
        """Raises the exception of a task that did not succeed."""
        if result.ok:
            return
        status = result.status
        if result.state != "cancelled" and status is not None and status.kind == "out_of_fuel":
            budget = (
                f"its loop budget of {self.loop_budget} iterations"
                if self.loop_budget is not None
                else "the default loop budget"
            )
            raise OutOfFuel(
                result,
                f"out of fuel: an invocation of the kernel looped past {budget} "
                "(a loop that never ends, or raise loop_budget)",
            )
        raise task_error(result)

    def _value(self, raw: Mapping[str, bytes], given: _Given, result: TaskResult) -> Any:
        values = {}
        for name in self.outputs:
            buf = self.buffers[name]
            data = raw[name]
            where = f"job {result.job} task {result.index}: buffer {name!r}"
            if given.returns == "bytes":
                values[name] = data
                continue
            dtype: str | None
            shape: tuple[int, ...] | None
            if buf.role == "output":
                dtype, shape = buf.dtype, buf.shape
            else:
                dtype, shape = given.inout.get(name, (None, None))
                dtype = buf.dtype or dtype
            if dtype is None:
                values[name] = data
            else:
                values[name] = _unpack(data, dtype, shape, given.returns, where)
        if len(values) == 1:
            return next(iter(values.values()))
        return values if values else None

    def _missing(self, result: TaskResult) -> list[str]:
        have = {f.path for f in result.files}
        return [n for n in self.outputs if n not in have]

    def _raw(self, result: TaskResult, check: bool = True) -> dict[str, bytes]:
        missing = self._missing(result)
        if missing and check:
            raise ProtocolError(
                f"job {result.job} task {result.index}: output buffer(s) {missing} did not "
                f"come back (files: {[f.path for f in result.files]})"
            )
        return {n: self._grid.file(result, n) for n in self.outputs if n not in missing}

    async def _raw_async(self, result: TaskResult, check: bool = True) -> dict[str, bytes]:
        missing = self._missing(result)
        if missing and check:
            raise ProtocolError(
                f"job {result.job} task {result.index}: output buffer(s) {missing} did not "
                f"come back (files: {[f.path for f in result.files]})"
            )
        return {n: await self._grid.file_async(result, n) for n in self.outputs if n not in missing}

    def _outcome_of(self, result: TaskResult, given: _Given) -> Any:
        self._check(result)
        return self._value(self._raw(result), given, result)

    async def _outcome_of_async(self, result: TaskResult, given: _Given) -> Any:
        self._check(result)
        return self._value(await self._raw_async(result), given, result)

    def _result(self, result: TaskResult, given: _Given, raw: dict[str, bytes]) -> GpuResult:
        value = None if self._missing(result) else self._value(raw, given, result)
        return GpuResult(value=value, buffers=raw, task=result)

    # -- call forms

    def _prepare(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[GpuKernel, _Given, Options]:
        named, options = self._split(kwargs)
        k, opts = self._with(options)
        return k, k._given(self._bind(args, named)), opts

    def __call__(self, *buffers: Any, **kwargs: Any) -> Any:
        k, given, opts = self._prepare(buffers, kwargs)
        return k._outcome_of(k._run([given.task], opts)[0], given)

    async def remote(self, *buffers: Any, **kwargs: Any) -> Any:
        k, given, opts = self._prepare(buffers, kwargs)
        return await k._outcome_of_async((await k._run_async([given.task], opts))[0], given)

    def call(self, *buffers: Any, **kwargs: Any) -> GpuResult:
        """The call's :class:`GpuResult`; with ``check=False`` a failed task's too."""
        k, given, opts = self._prepare(buffers, kwargs)
        result = k._run([given.task], opts)[0]
        if opts.check:
            k._check(result)
        return k._result(result, given, k._raw(result, check=opts.check))

    async def call_async(self, *buffers: Any, **kwargs: Any) -> GpuResult:
        k, given, opts = self._prepare(buffers, kwargs)
        result = (await k._run_async([given.task], opts))[0]
        if opts.check:
            k._check(result)
        return k._result(result, given, await k._raw_async(result, check=opts.check))

    def map(
        self, items: Iterable[Any], *, return_exceptions: bool = False, **options: Any
    ) -> list[Any]:
        """Runs one task per item, as one job; returns the outputs in order. An item is a
        tuple (the input buffers in order), a dict (by name), or the only input buffer. With
        ``return_exceptions``, a failed task's exception takes its place instead of being
        raised."""
        k, opts = self._with(options)
        given = [k._item(i) for i in items]
        if not given:
            return []
        progress = opts.progress if opts.progress is not None else _stderr_is_terminal()
        results = k._run([g.task for g in given], opts, progress)
        out: list[Any] = []
        for r, g in zip(results, given, strict=True):
            try:
                out.append(k._outcome_of(r, g))
            except TaskError as e:
                if not return_exceptions:
                    raise
                out.append(e)
        return out

    async def map_async(
        self, items: Iterable[Any], *, return_exceptions: bool = False, **options: Any
    ) -> list[Any]:
        k, opts = self._with(options)
        given = [k._item(i) for i in items]
        if not given:
            return []
        progress = opts.progress if opts.progress is not None else _stderr_is_terminal()
        results = await k._run_async([g.task for g in given], opts, progress)
        out: list[Any] = []
        for r, g in zip(results, given, strict=True):
            try:
                out.append(await k._outcome_of_async(r, g))
            except TaskError as e:
                if not return_exceptions:
                    raise
                out.append(e)
        return out


def read_shader(shader: str | os.PathLike[str]) -> str:
    """WGSL source from its text or a file (a :class:`~pathlib.Path`, or a string naming an
    existing file)."""
    if isinstance(shader, os.PathLike):
        return Path(shader).read_text(encoding="utf-8")
    if not isinstance(shader, str):
        raise TypeError(f"shader must be WGSL text or a path, not {type(shader).__name__}")
    if "\n" not in shader and len(shader) < 4096 and os.path.isfile(shader):
        return Path(shader).read_text(encoding="utf-8")
    return shader


__all__ = [
    "DTYPES",
    "GpuBuffer",
    "GpuKernel",
    "GpuResult",
    "dispatches",
    "dtype_name",
    "inout",
    "input",
    "output",
    "read_shader",
    "uniform",
]

"""runegrid: call Rune script functions, WASI modules and GPU kernels on a runegrid compute
grid.

>>> from runegrid import Grid
>>> with Grid() as grid:                      # $RUNEGRID_URL, $RUNEGRID_TOKEN
...     add = grid.script("pub fn add(a, b) { a + b }").function("add")
...     add(1, 2)                             # 3, verified by replicas agreeing
...     add.map([(i, i) for i in range(100)])  # one job of 100 tasks, values in order
...     grid.generate("What is the capital of France?")  # an LLM's answer, verified
...     gpu_add = grid.gpu(WGSL, buffers={"a": "u32", "b": "u32", "sum": "out u32"})
...     gpu_add(1, 2)                         # 3, computed on a contributor's GPU
"""

from .calls import (
    AsyncOutputStream,
    OutputStream,
    Script,
    ScriptFunction,
    WasmProgram,
)
from .chat import DEFAULT_MODEL, AsyncChatStream, ChatReply, ChatStream, ModelInfo, Usage
from .credits import Credits, JobCost, Price
from .errors import (
    ApiError,
    CallTimeout,
    Cancelled,
    ConnectionFailed,
    InsufficientCredits,
    InvalidKernel,
    MemoryLimit,
    NonZeroExit,
    OutOfFuel,
    OutputLimit,
    ProtocolError,
    RunegridError,
    ScriptError,
    StackOverflow,
    StdoutLimit,
    TaskError,
    Trap,
    VerificationFailed,
)
from .gpu import GpuBuffer, GpuKernel, GpuResult
from .grid import DEFAULT_URL, Grid
from .options import Options
from .results import ExecStatus, OutputFile, ScriptResult, TaskResult

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncChatStream",
    "AsyncOutputStream",
    "CallTimeout",
    "ChatReply",
    "ChatStream",
    "Cancelled",
    "ConnectionFailed",
    "Credits",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "ExecStatus",
    "GpuBuffer",
    "GpuKernel",
    "GpuResult",
    "Grid",
    "InsufficientCredits",
    "InvalidKernel",
    "JobCost",
    "MemoryLimit",
    "ModelInfo",
    "NonZeroExit",
    "Options",
    "OutOfFuel",
    "OutputFile",
    "OutputLimit",
    "OutputStream",
    "Price",
    "ProtocolError",
    "RunegridError",
    "Script",
    "ScriptError",
    "ScriptFunction",
    "ScriptResult",
    "StackOverflow",
    "StdoutLimit",
    "TaskError",
    "TaskResult",
    "Trap",
    "Usage",
    "VerificationFailed",
    "WasmProgram",
]

"""A stand-in for the ``tensorrt`` Python module and for a CUDA device, so that the TensorRT stage
(``reidpipe/deploy/tensorrt_build.py``) runs its build, inference, latency and parity-gate branches
on a machine with neither.

Only the calls the stage makes exist, under the names and signatures of TensorRT 10's Python API:
``Logger``, ``Builder`` (``create_network``, ``create_builder_config``,
``create_optimization_profile``, ``build_serialized_network``), ``NetworkDefinitionCreationFlag``,
``OnnxParser`` (``parse_from_file``, ``num_errors``, ``get_error``), the builder config
(``set_memory_pool_limit``, ``set_flag``, ``create_timing_cache``, ``set_timing_cache``,
``add_optimization_profile``, ``get_timing_cache``), ``MemoryPoolType``, ``BuilderFlag``,
``Runtime.deserialize_cuda_engine``, the engine (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``get_tensor_dtype``, ``create_execution_context``), ``TensorIOMode``,
``DataType`` and the execution context (``set_input_shape``, ``get_tensor_shape``,
``set_tensor_address``, ``execute_async_v3``). ``version=11`` drops what TensorRT 11 removed:
``BuilderFlag.FP16`` and ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.

The engine is the parsed ONNX graph run by ONNX Runtime. Like TensorRT it reads its input from and
writes its output to the raw addresses bound with ``set_tensor_address``: the "CUDA device" is host
memory (``torch.cuda`` is patched so that CUDA tensors are CPU tensors and streams do nothing).
With ``BuilderFlag.FP16`` set it computes at half precision (input and output rounded to float16);
``FakeTensorRT.distort`` changes every output it writes, to make an engine that disagrees with
ONNX Runtime.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import json
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

ENGINE_MAGIC = b"fake-tensorrt-engine\n"
CACHE_MAGIC = b"fake-tensorrt-timing-cache\n"


class Logger:
    """``trt.Logger(trt.Logger.WARNING)``: the severities are attributes of the class."""

    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, min_severity: int = WARNING) -> None:
        self.min_severity = min_severity


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    """``str()`` gives ``DataType.HALF``, as TensorRT's enums do."""

    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


@dataclass
class FakeTensorRT:
    """What the fake TensorRT does, and what the stage asked of it (``builds``)."""

    version: int = 10
    distort: Callable[[np.ndarray], np.ndarray] | None = None  # applied to every output
    unsupported_ops: frozenset[str] = frozenset()  # the parser has no importer for these
    min_workspace_mib: int = 0  # the build fails below this pool limit
    io_dtype: DataType = DataType.FLOAT  # what the engine reports for its I/O tensors
    device: str = "fake GPU"  # a timing cache is only accepted on its device
    builds: list[dict[str, Any]] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        trt = types.ModuleType("tensorrt")
        trt.__version__ = f"{self.version}.0.0 (fake)"
        flags = {"FP16": 0, "INT8": 1, "DEBUG": 2} if self.version < 11 else {"DEBUG": 2}
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
        creation = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if self.version < 11 else {}
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation)
        trt.Logger, trt.MemoryPoolType = Logger, MemoryPoolType
        trt.TensorIOMode, trt.DataType = TensorIOMode, DataType
        trt.Builder = functools.partial(Builder, self, trt)
        trt.OnnxParser = OnnxParser
        trt.Runtime = functools.partial(Runtime, self)
        return trt

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
        """This fake as ``import tensorrt``, and a CUDA device in host memory, for one test."""
        monkeypatch.setitem(sys.modules, "tensorrt", self.module())
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: self.device)
        monkeypatch.setattr(torch.cuda, "Stream", HostStream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: HostStream())
        monkeypatch.setattr(torch.Tensor, "cuda", lambda tensor, *args, **kwargs: tensor)
        rand = torch.rand

        def host_rand(*size: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
            return rand(*size, device="cpu" if str(device).startswith("cuda") else device, **kwargs)

        monkeypatch.setattr(torch, "rand", host_rand)
        return self


class HostStream:
    """``torch.cuda.Stream`` of the host-memory device: work is done when a call returns."""

    cuda_stream = 0

    def wait_stream(self, other: HostStream) -> None:
        pass

    def synchronize(self) -> None:
        pass


@dataclass
class TensorInfo:
    name: str


class Network:
    def __init__(self, fake: FakeTensorRT, flags: int) -> None:
        self.fake, self.flags = fake, flags
        self.onnx_path: Path | None = None
        self.inputs: list[TensorInfo] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> TensorInfo:
        return self.inputs[index]


class ParserError:
    def __init__(self, node: int, message: str) -> None:
        self.node, self.message = node, message

    def desc(self) -> str:
        return self.message

    def __str__(self) -> str:
        return f"In node {self.node}: {self.message}"


class OnnxParser:
    def __init__(self, network: Network, logger: Logger) -> None:
        self.network = network
        self.errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def parse_from_file(self, path: str) -> bool:
        model = onnx.load(path)
        for index, node in enumerate(model.graph.node):
            if node.op_type in self.network.fake.unsupported_ops:
                self.errors.append(
                    ParserError(
                        index, f"UNSUPPORTED_NODE: No importer registered for op: {node.op_type}"
                    )
                )
        if self.errors:
            return False
        self.network.onnx_path = Path(path)
        self.network.inputs = [TensorInfo(i.name) for i in model.graph.input]
        return True


class OptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - API
        self.shapes[name] = [list(min), list(opt), list(max)]


class TimingCache:
    def __init__(self, device: str) -> None:
        self.device = device

    def serialize(self) -> bytes:
        return CACHE_MAGIC + self.device.encode()


class BuilderConfig:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.flags: set[int] = set()
        self.profiles: list[OptimizationProfile] = []
        self.cache: TimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.pool_limits[pool] = size

    def set_flag(self, flag: int) -> None:
        self.flags.add(int(flag))

    def create_timing_cache(self, serialized: bytes) -> TimingCache:
        """An empty cache from b"", else the serialized one (whatever device made it)."""
        if serialized.startswith(CACHE_MAGIC):
            return TimingCache(serialized[len(CACHE_MAGIC) :].decode())
        return TimingCache(self.fake.device)

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        if cache.device != self.fake.device and not ignore_mismatch:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> TimingCache:
        return self.cache or TimingCache(self.fake.device)

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class HostMemory:
    """``IHostMemory``: ``bytes(...)`` gives the serialized engine."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.nbytes = len(data)

    def __bytes__(self) -> bytes:
        return self.data


class Builder:
    def __init__(self, fake: FakeTensorRT, trt: types.ModuleType, logger: Logger) -> None:
        self.fake, self.trt = fake, trt

    def create_network(self, flags: int = 0) -> Network:
        return Network(self.fake, flags)

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig(self.fake)

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(
        self, network: Network, config: BuilderConfig
    ) -> HostMemory | None:
        workspace = config.pool_limits.get(MemoryPoolType.WORKSPACE, 0)
        fp16_flag = getattr(self.trt.BuilderFlag, "FP16", None)
        fp16 = fp16_flag is not None and int(fp16_flag) in config.flags
        typed = getattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        build = {
            "onnx": network.onnx_path.name if network.onnx_path else None,
            "strongly_typed": typed is None or bool(network.flags & (1 << int(typed))),
            "fp16_flag": fp16,
            "workspace_bytes": workspace,
            "profiles": [p.shapes for p in config.profiles],
            "timing_cache": config.cache is not None,
        }
        self.fake.builds.append(build)
        if network.onnx_path is None or len(config.profiles) != 1:
            return None
        if workspace < self.fake.min_workspace_mib << 20:
            return None  # TensorRT logs "insufficient workspace" and returns None
        plan = {"onnx": str(network.onnx_path), "fp16": fp16, "profile": config.profiles[0].shapes}
        return HostMemory(ENGINE_MAGIC + json.dumps(plan).encode())


class Runtime:
    def __init__(self, fake: FakeTensorRT, logger: Logger) -> None:
        self.fake = fake

    def deserialize_cuda_engine(self, serialized: bytes) -> Engine | None:
        if not bytes(serialized).startswith(ENGINE_MAGIC):
            return None
        return Engine(self.fake, json.loads(bytes(serialized)[len(ENGINE_MAGIC) :]))


class Engine:
    def __init__(self, fake: FakeTensorRT, plan: dict[str, Any]) -> None:
        import onnxruntime

        from reidpipe.evaluation.onnx_runtime import session_options

        self.fake, self.fp16 = fake, plan["fp16"]
        self.profile = plan["profile"]
        self.session = onnxruntime.InferenceSession(
            plan["onnx"], session_options(), providers=["CPUExecutionProvider"]
        )
        (graph_input,), (graph_output,) = self.session.get_inputs(), self.session.get_outputs()
        self.input, self.output = graph_input.name, graph_output.name
        self.output_dims = graph_output.shape[1:]

    @property
    def num_io_tensors(self) -> int:
        return 2

    def get_tensor_name(self, index: int) -> str:
        return (self.input, self.output)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return {self.input: TensorIOMode.INPUT, self.output: TensorIOMode.OUTPUT}.get(
            name, TensorIOMode.NONE
        )

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.fake.io_dtype

    def create_execution_context(self) -> ExecutionContext:
        return ExecutionContext(self)


class ExecutionContext:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.input_shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.profile[name]
        if (
            name != self.engine.input
            or len(shape) != len(low)
            or not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high))
        ):
            return False
        self.input_shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name == self.engine.input:
            return self.input_shape
        return (self.input_shape[0], *self.engine.output_dims)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        engine = self.engine
        if self.input_shape is None or set(self.addresses) != {engine.input, engine.output}:
            return False
        images = _read_floats(self.addresses[engine.input], self.input_shape)
        if engine.fp16:
            images = images.astype(np.float16).astype(np.float32)
        (out,) = engine.session.run(None, {engine.input: images})
        if engine.fp16:
            out = out.astype(np.float16).astype(np.float32)
        if engine.fake.distort is not None:
            out = engine.fake.distort(out)
        out = np.ascontiguousarray(out, dtype=np.float32)
        if out.shape != self.get_tensor_shape(engine.output):
            return False
        ctypes.memmove(self.addresses[engine.output], out.ctypes.data, out.nbytes)
        return True


def _read_floats(address: int, shape: tuple[int, ...]) -> np.ndarray:
    """A copy of the float32 array of ``shape`` at ``address``."""
    buffer = (ctypes.c_float * math.prod(shape)).from_address(address)
    return np.ctypeslib.as_array(buffer).reshape(shape).copy()

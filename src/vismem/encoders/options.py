"""How an encoder runs: device, runtime, precision, batch size, decode workers.

None of this is part of an encoder's identity: a memory built on a GPU in half
precision is queried on a CPU with ONNX Runtime and vice versa, because every runtime
is checked to agree with the fp32 torch model before it is used (see `onnx.py` and
`runtime.py`). The resolving functions are pure: they take what the machine has as
arguments, so the choice can be tested on any machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from ..errors import InvalidInputError

DEVICE_ENV = "VISMEM_DEVICE"
RUNTIMES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# More decoding processes than this only compete for the cores and memory (each holds a
# batch of decoded images); `--decode-workers 10000` asked loky for a pool of 10,000.
MAX_DECODE_WORKERS = 64


@dataclass(frozen=True)
class EncoderOptions:
    """Runtime options of an encoder; the defaults pick the fastest path that agrees.

    - `device`: auto|cpu|cuda|cuda:N|mps; None reads VISMEM_DEVICE, else auto
      (a CUDA GPU when one is visible, else MPS, else the CPU).
    - `runtime`: auto|torch|onnx; auto is ONNX Runtime on the CPU when it is installed
      and the model exports and agrees with torch, else torch.
    - `precision`: auto|fp32|fp16|bf16; auto is fp16 on CUDA, fp32 elsewhere.
    - `batch_size`: images per forward pass; None fits it to the GPU's free memory,
      or the encoder's default on a CPU.
    - `decode_workers`: processes that decode and resize images; None chooses from
      the measured cost of decoding against the model's forward pass.
    """

    device: str | None = None
    runtime: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    decode_workers: int | None = None

    def __post_init__(self) -> None:
        if self.device is not None and not _DEVICE.match(self.device):
            raise InvalidInputError(
                f"unknown device {self.device!r}; use auto, cpu, cuda, cuda:N or mps"
            )
        if self.runtime not in RUNTIMES:
            raise InvalidInputError(f"unknown runtime {self.runtime!r}; use {'|'.join(RUNTIMES)}")
        if self.precision not in PRECISIONS:
            raise InvalidInputError(
                f"unknown precision {self.precision!r}; use {'|'.join(PRECISIONS)}"
            )
        for name, low, high in (("batch_size", 1, None), ("decode_workers", 0, MAX_DECODE_WORKERS)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low or (high and value > high)):
                kind = f"an integer from {low} to {high}" if high else "a positive integer"
                raise InvalidInputError(f"{name} must be {kind}, got {value!r}")

    def with_env(self) -> EncoderOptions:
        """These options with `device` filled in from VISMEM_DEVICE when it was not given."""
        if self.device is not None:
            return self
        return replace(self, device=os.environ.get(DEVICE_ENV) or "auto")


@dataclass(frozen=True)
class Plan:
    """What an encoder will run on, resolved from options and the machine."""

    device: str  # "cpu", "cuda:0", "mps"
    runtime: str  # "torch" or "onnx"
    precision: str  # "fp32", "fp16" or "bf16"


def resolve_device(requested: str, *, cuda_devices: int, mps: bool) -> str:
    """The concrete device for `requested`, given how many CUDA GPUs and whether MPS
    are visible. Raises InvalidInputError naming the fix when the device is absent."""
    if requested == "auto":
        return "cuda:0" if cuda_devices else "mps" if mps else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "mps":
        if not mps:
            raise InvalidInputError("--device mps: no Apple GPU (MPS) is available here; use --device auto or cpu")
        return "mps"
    index = int(requested.partition(":")[2] or 0)
    if index >= cuda_devices:
        seen = f"only {cuda_devices} CUDA GPU(s) are visible" if cuda_devices else "no CUDA GPU is visible"
        raise InvalidInputError(f"--device {requested}: {seen}; use --device auto or cpu")
    return f"cuda:{index}"


def resolve_plan(options: EncoderOptions, *, cuda_devices: int, mps: bool, onnx_installed: bool,
                 bf16_on_cpu: bool = True) -> Plan:
    """Device, runtime and precision for a torch model under `options`.

    ONNX Runtime is our CPU runtime (fp32 only): `auto` takes it on the CPU whenever it
    is installed and no half precision was asked for. Half precision is the default
    only on CUDA, where it is fast and checked against fp32 before use.
    """
    device = resolve_device(options.with_env().device or "auto", cuda_devices=cuda_devices, mps=mps)
    precision = options.precision
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    if precision == "bf16" and device == "cpu" and not bf16_on_cpu:
        raise InvalidInputError("--precision bf16: this torch cannot run bf16 on the CPU; use --precision fp32")
    runtime = options.runtime
    if runtime == "onnx":
        if not onnx_installed:
            raise InvalidInputError("--runtime onnx: onnxruntime is not installed; run `pip install onnxruntime` "
                                    "or use --runtime torch")
        if device != "cpu":
            raise InvalidInputError(f"--runtime onnx runs on the CPU, not {device}; add --device cpu "
                                    "or use --runtime torch")
        if precision != "fp32":
            raise InvalidInputError(f"--runtime onnx runs in fp32, not {precision}; drop --precision "
                                    "or use --runtime torch")
    elif runtime == "auto":
        runtime = "onnx" if onnx_installed and device == "cpu" and precision == "fp32" else "torch"
    return Plan(device, runtime, precision)


def batch_size_for_memory(free_bytes: int, bytes_per_image: int, *, floor: int = 8,
                          ceiling: int = 1024) -> int:
    """The largest power-of-two batch whose activations take at most half the free
    memory (the rest is headroom for the allocator and other work), within bounds."""
    if bytes_per_image <= 0:
        return ceiling
    fits = max(1, (free_bytes // 2) // bytes_per_image)
    size = 1 << (int(fits).bit_length() - 1)
    return max(floor, min(ceiling, size))

"""Where the encoder runs, as CLI options shared by create/add/classify/eval/serve.

Each command declares these parameters and passes `encoder_options(...)` to
`Memory.create` / `Memory.open`; `encoding(memory)` names what was chosen, for progress bars.
"""

from __future__ import annotations

from typing import Optional

import typer

from ..encoders import EncoderOptions
from ..encoders.options import DEVICE_ENV, MAX_DECODE_WORKERS, PRECISIONS, RUNTIMES
from ..errors import InvalidInputError
from . import err
from .numbers import number_option


def _checked(field: str):
    """A callback refusing a value `EncoderOptions` would refuse, as bad usage (exit 2)
    before anything is read, in EncoderOptions' words."""
    def check(value: Optional[str]) -> Optional[str]:
        if value is not None:
            try:
                EncoderOptions(**{field: value})  # type: ignore[arg-type]  # field is a str option
            except InvalidInputError as exc:
                raise typer.BadParameter(str(exc)) from None
        return value
    return check


def _given_device(ctx: typer.Context, param: typer.CallbackParam, value: Optional[str]) -> Optional[str]:
    """--device as given; one from VISMEM_DEVICE is checked the same, then left to
    `EncoderOptions.with_env`: it is this machine's default for models, so an encoder
    without a model (pixels) runs where it can instead of refusing it."""
    value = _checked("device")(value)
    # by name: typer vendors its own click, whose ParameterSource is not click's
    source = ctx.get_parameter_source(param.name) if param.name else None
    if getattr(source, "name", None) == "ENVIRONMENT":
        return None
    return value


DeviceOpt = typer.Option(None, "--device", envvar=DEVICE_ENV, show_envvar=True, callback=_given_device,
                         help="auto|cpu|cuda|cuda:N|mps: auto takes a CUDA GPU, else MPS, else the CPU.")
RuntimeOpt = typer.Option("auto", "--runtime", callback=_checked("runtime"),
                          help=f"{'|'.join(RUNTIMES)}: auto is ONNX Runtime on the CPU "
                          "(exported once, checked against torch), torch elsewhere.")
PrecisionOpt = typer.Option("auto", "--precision", callback=_checked("precision"),
                            help=f"{'|'.join(PRECISIONS)}: auto is fp16 on CUDA "
                            "(checked against fp32), fp32 elsewhere; fp32 opts out of half precision.")
BatchSizeOpt = number_option(None, "--batch-size", kind=int, min=1, metavar="N",
                             help="Images per forward pass [default: fitted to the GPU; on the CPU 32, "
                                  "256 for the pixels encoder].")
DecodeWorkersOpt = number_option(None, "--decode-workers", kind=int, min=0, max=MAX_DECODE_WORKERS, metavar="N",
                                 help="Processes that decode images (0: a thread) [default: measured].")


def encoder_options(device: Optional[str], runtime: str, precision: str, batch_size: Optional[int] = None,
                    decode_workers: Optional[int] = None) -> EncoderOptions:
    return EncoderOptions(device=device, runtime=runtime, precision=precision, batch_size=batch_size,
                          decode_workers=decode_workers)


def encoding(memory, *, required: bool = True) -> str:
    """The encoder and where it runs, e.g. for a progress bar: loads the encoder, so a
    failure to load comes before any output. A memory without one is refused (its error
    names `vismem add-vectors`) unless not `required`."""
    if memory.encoder_name is None and not required:
        return "no encoder"
    encoder = memory.encoder
    return f"{encoder.runtime.describe()}, batch {encoder.batch_size}"


def announce(memory) -> None:
    """One stderr line naming the encoder and where it runs (or that there is none)."""
    if memory.encoder_name is None:
        err.print(f"no encoder: this memory takes precomputed {memory.dim}-d vectors")
    else:
        err.print(f"encoding with {memory.encoder_name}: {encoding(memory)}")


def planned_encoding(memory) -> dict | None:
    """Where this memory's encoder would run here by default, for `vismem info`."""
    from ..encoders.runtime import planned_runtime

    plan = planned_runtime(memory.encoder_name)
    return None if plan is None else {**plan.to_dict(), "describe": plan.describe()}

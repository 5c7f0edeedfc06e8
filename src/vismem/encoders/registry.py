"""Encoders by name: one string picks a model, a registry maps names to builders.

Adding an encoder means registering one builder. Builders import their heavy
libraries lazily, so listing or opening a memory does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import EncoderError, InvalidInputError
from .base import Encoder, Recipe, file_digest
from .options import EncoderOptions

Builder = Callable[..., Encoder]
# (name as given, weights file or None) -> (id name, weights id) of the encoder the builder
# would make, when that is known without building it; else None
Identify = Callable[[str, str | Path | None], tuple[str, str] | None]
# (name as given, weights file or None) -> (the first two parts of the id an older vismem
# gave that encoder, and the weights file it named by its path alone), where it held no
# digest of the file and `Identify` now gives one; else None
Former = Callable[[str, str | Path | None], tuple[str, Path] | None]

_BUILDERS: dict[str, Builder] = {}
_PREFIX_BUILDERS: dict[str, Builder] = {}
_DESCRIPTIONS: dict[str, str] = {}
_IDENTIFY: dict[str, Identify] = {}
_FORMER: dict[str, Former] = {}
_SUPPORTS: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = {}
_RUNTIMES: dict[str, tuple[str, ...] | None] = {}


def weights_file_digest(name: str, weights: str | Path | None) -> tuple[str, str] | None:
    """What every torch builder calls a weights file it is given: its name and the file's digest."""
    if weights is None or not Path(weights).is_file():
        return None
    return name, file_digest(Path(weights))


def register(name: str, description: str, *, prefix: bool = False,
             identify: Identify = weights_file_digest, former: Former | None = None,
             devices: tuple[str, ...] | None = None,
             precisions: tuple[str, ...] | None = None,
             runtimes: tuple[str, ...] | None = None) -> Callable[[Builder], Builder]:
    """Register a builder under `name`, or for every `name:<model>` when `prefix` is set.
    `identify` says the first two parts of its encoders' id without building one; `former`,
    those an older vismem gave them where it named a weights file by its path (no digest).
    `devices` (kinds: cpu, cuda, mps) and `precisions` are those its encoders can run on,
    when not all: others given are refused before it builds (`check_supported`).
    `runtimes` (torch, onnx) likewise, when not both; () for an encoder with no model. An
    encoder that runs on torch is a torch model: `create_encoder` resolves its plan
    (`options.resolve_plan`) before it builds."""

    def decorate(builder: Builder) -> Builder:
        key = f"{name}:" if prefix else name
        (_PREFIX_BUILDERS if prefix else _BUILDERS)[name] = builder
        _DESCRIPTIONS[f"{name}:<model>" if prefix else name] = description
        _IDENTIFY[key] = identify
        if former is not None:
            _FORMER[key] = former
        _SUPPORTS[key] = (devices, precisions)
        _RUNTIMES[key] = runtimes
        return builder

    return decorate


def _key(name: str) -> str:
    return name if name in _BUILDERS else name.partition(":")[0] + ":"


def supports_device(name: str, device: str) -> bool:
    """Whether the encoder `name` can run on `device` (cpu, cuda, cuda:N, mps)."""
    devices = _SUPPORTS.get(_key(name), (None, None))[0]
    return devices is None or device.partition(":")[0] in devices


def supports_runtime(name: str, runtime: str) -> bool:
    """Whether the encoder `name` can run on `runtime` (torch or onnx)."""
    runtimes = _RUNTIMES.get(_key(name))
    return runtimes is None or runtime in runtimes


_RUNTIME_NAMES = {"torch": "torch", "onnx": "ONNX Runtime"}


def check_supported(name: str, options: EncoderOptions) -> None:
    """Refuse a runtime, device or precision the encoder `name` cannot run on, as an
    impossible `--runtime` is refused for a torch model, rather than run elsewhere without
    a word. `options` as given: a device from VISMEM_DEVICE (`device` None) is this
    machine's default for models, and an encoder without one runs where it can."""
    devices, precisions = _SUPPORTS.get(_key(name), (None, None))
    device, precision, runtime = options.device, options.precision, options.runtime
    runtimes = _RUNTIMES.get(_key(name))
    if runtime != "auto" and not supports_runtime(name, runtime):
        if not runtimes:
            raise InvalidInputError(f"encoder {name} has no model to run on {_RUNTIME_NAMES[runtime]}: "
                                    f"drop --runtime {runtime}")
        raise InvalidInputError(f"encoder {name} runs on {' or '.join(_RUNTIME_NAMES[r] for r in runtimes)} only, "
                                f"not {_RUNTIME_NAMES[runtime]}: drop --runtime {runtime}")
    if devices is not None and device not in (None, "auto") and not supports_device(name, device):
        raise InvalidInputError(f"encoder {name} runs on {' or '.join(devices)} only, not {device}: "
                                f"drop --device {device}")
    if precisions is not None and precision != "auto" and precision not in precisions:
        raise InvalidInputError(f"encoder {name} runs in {' or '.join(precisions)} only, not {precision}: "
                                f"drop --precision {precision}")


def known_weights(name: str, weights: str | Path | None = None) -> tuple[str, str] | None:
    """(id name, weights id) of `create_encoder(name, weights=weights)`, when they are known
    without building it (hashing a weights file at most); None when only a build tells
    (downloaded weights). A memory checks them first: building can take seconds, an ONNX
    export more, to learn what a changed file's digest already says."""
    identify = _IDENTIFY.get(_key(name))
    return None if identify is None else identify(name, weights)


def former_weights_path(name: str, weights: str | Path | None = None) -> tuple[str, Path] | None:
    """(the first two parts of the id an older vismem gave `create_encoder(name,
    weights=weights)`, the weights file that id named by its path alone), where that id
    held no digest of the file but `known_weights` now gives one; None for every other
    encoder. A memory with that id cannot tell whether the file changed since."""
    former = _FORMER.get(_key(name))
    return None if former is None else former(name, weights)


def available_encoders() -> dict[str, str]:
    """Registered encoder names (and `prefix:<model>` adapters) with a one-line description."""
    return dict(_DESCRIPTIONS)


def create_encoder(name: str, *, weights: str | Path | None = None,
                   options: EncoderOptions | None = None) -> Encoder:
    """Build the encoder called `name`.

    `weights` is an optional local file of model weights (a PyTorch state dict) that
    replaces the encoder's default pretrained weights, for machines with no network.
    `options` say where and how it runs (device, runtime, precision, batch size,
    decode workers); they never change its id. The encoder's `recipe` records them, its
    own name and the weights file's resolved path, to build it again (a pickled
    `vismem.sklearn.MemoryEncoder`).
    """
    if weights is not None and not Path(weights).is_file():
        if Path(weights).is_dir():
            raise EncoderError(f"weights file {weights} is a folder, not a file: give the state dict file in it")
        raise EncoderError(f"weights file not found: {weights}")
    given = options
    options = options or EncoderOptions()
    check_supported(name, options)
    options = options.with_env()
    prefix, _, model = name.partition(":")
    if name not in _BUILDERS and not (model and prefix in _PREFIX_BUILDERS):
        known = ", ".join(sorted(available_encoders()))
        raise EncoderError(f"unknown encoder {name!r}; available: {known}")
    if supports_runtime(name, "torch"):
        # A torch model: a device, runtime and precision that cannot go together (--runtime
        # onnx --device cuda) are refused now, not once its weights are downloaded and built.
        from .runtime import plan_for

        plan_for(options)
    if name in _BUILDERS:
        built = _BUILDERS[name](weights=weights, options=options)
    else:
        built = _PREFIX_BUILDERS[prefix](model, weights=weights, options=options)
    # as given: a device left to VISMEM_DEVICE is the rebuilding machine's to choose
    built.recipe = Recipe(built.name, None if weights is None else str(Path(weights).resolve()), given)
    return built

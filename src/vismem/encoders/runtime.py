"""Running a torch model fast and faithfully: device, precision, ONNX Runtime.

`torch_encoder` turns a torch module into an `Encoder` under `EncoderOptions`: it
resolves the device, precision and runtime (`options.resolve_plan`), then checks each
faster path against the plain fp32 model on a fixed batch before trusting it:

- half precision (fp16/bf16 autocast) must keep cosine >= 0.999 to fp32 on every image;
- ONNX Runtime (fp32) must keep cosine >= 0.9999 (`onnx.exported_forward`).

A path that fails its check is refused, with a warning, and the encoder falls back to
fp32 torch, so the vectors always stay comparable with the memory's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from .base import Encoder, Preprocessing, RuntimeInfo, encoder_id
from .options import EncoderOptions, Plan, batch_size_for_memory, resolve_plan

HALF_MIN_COSINE = 0.999
DEFAULT_BATCH = 32


class EncoderFallbackWarning(UserWarning):
    """A faster runtime was refused (failed to export, or disagreed with fp32 torch)."""


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two (n, dim) arrays."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape:
        return -1.0
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(np.sum(a * b, axis=1) / np.maximum(norms, 1e-30)))


def verification_batch(preprocessing: Preprocessing, count: int = 4) -> np.ndarray:
    """A fixed uint8 batch (count, S, S, 3) with photo-like structure (smooth colour
    fields, edges, fine noise), the same on every machine, to check runtimes against."""
    from PIL import Image

    size = preprocessing.image_size
    rng = np.random.default_rng(20240612)
    images = []
    for i in range(count):
        coarse = rng.integers(0, 256, (4 + 2 * i, 4 + 2 * i, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC),
                            dtype=np.float32)
        ramp = np.linspace(0, 60, size, dtype=np.float32)[None, :, None]
        noise = rng.normal(0, 12, (size, size, 3)).astype(np.float32)
        edge = np.zeros((size, size, 1), np.float32)
        edge[size // 3 : 2 * size // 3, size // 4 :] = 70.0
        images.append(np.clip(smooth * 0.7 + ramp + noise + edge, 0, 255).astype(np.uint8))
    return np.stack(images)


def torch_machine() -> dict:
    """What this machine offers torch: CUDA GPUs, Apple MPS, bf16 on the CPU."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return {
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "mps": bool(mps and mps.is_available()),
        "bf16_on_cpu": hasattr(torch, "bfloat16") and hasattr(torch, "autocast"),
    }


def plan_for(options: EncoderOptions | None) -> Plan:
    """The device/runtime/precision `options` resolve to on this machine."""
    from .onnx import onnx_installed  # onnx.py imports this module

    return resolve_plan(options or EncoderOptions(), onnx_installed=onnx_installed(), **torch_machine())


class TorchForward:
    """uint8 (n, H, W, 3) pixels -> float32 (n, dim) features with a torch model.

    Pixels travel to the device as uint8 (a quarter of float32's bytes), from pinned
    memory with a non-blocking copy on CUDA, and are normalised there. The model runs
    channels-last (faster convolutions on CPU and GPU) in inference mode, under
    autocast when `precision` is fp16 or bf16.
    """

    def __init__(self, model, preprocessing: Preprocessing, device: str = "cpu",
                 precision: str = "fp32") -> None:
        import torch

        self.device = torch.device(device)
        self.precision = precision
        self.model = model.eval().to(self.device).to(memory_format=torch.channels_last)
        self.mean = (torch.tensor(preprocessing.mean).view(1, 3, 1, 1) * 255.0).to(self.device)
        self.std = (torch.tensor(preprocessing.std).view(1, 3, 1, 1) * 255.0).to(self.device)
        self.pin = self.device.type == "cuda"
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch))
            if self.pin:
                x = x.pin_memory()
            x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
            if self.dtype is None:
                out = self.model(x)
            else:
                with torch.autocast(self.device.type, dtype=self.dtype):
                    out = self.model(x)
            return out.float().cpu().numpy()

    def bytes_per_image(self, sample: np.ndarray) -> int:
        """Peak GPU memory one image costs in a forward pass (CUDA only)."""
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self(sample)
        torch.cuda.synchronize(self.device)
        return max(1, (torch.cuda.max_memory_allocated(self.device) - before) // len(sample))


def fit_batch_size(forward: TorchForward, sample: np.ndarray) -> int:
    """A batch size that fits the card's free memory, measured with `sample`."""
    import torch

    free, _ = torch.cuda.mem_get_info(forward.device)
    return batch_size_for_memory(free, forward.bytes_per_image(sample))


def fallback(message: str) -> str:
    warnings.warn(message, EncoderFallbackWarning, stacklevel=3)
    return message


def torch_encoder(name: str, dim: int, preprocessing: Preprocessing, weights_id: str, model,
                  options: EncoderOptions | None = None, *, id_name: str | None = None) -> Encoder:
    """An Encoder running `model`, a module mapping normalised (n, 3, H, W) -> (n, dim),
    on the device, runtime and precision that `options` resolve to. `id_name`: what its
    id calls it, when `name` holds more (a weights file's path)."""
    options = options or EncoderOptions()
    plan = plan_for(options)
    notes: list[str] = []
    forward: Callable[[np.ndarray], np.ndarray] | None = None
    precision = plan.precision
    if plan.runtime == "onnx":
        from .onnx import exported_forward

        forward, note = exported_forward(model, encoder_id(id_name or name, weights_id, preprocessing), preprocessing,
                                         lambda: TorchForward(model, preprocessing))
        if forward is None:
            notes.append(fallback(f"{name}: ONNX Runtime not used, running torch instead: {note}"))
    torch_forward = None
    if forward is None:
        torch_forward = TorchForward(model, preprocessing, plan.device, precision)
        if precision != "fp32":
            sample = verification_batch(preprocessing)
            exact = TorchForward(model, preprocessing, plan.device, "fp32")(sample)
            agreement = min_cosine(exact, torch_forward(sample))
            if agreement < HALF_MIN_COSINE:
                notes.append(fallback(f"{name}: {precision} refused on {plan.device} (cosine {agreement:.5f} "
                                      f"to fp32 < {HALF_MIN_COSINE}); running fp32"))
                precision = "fp32"
                torch_forward = TorchForward(model, preprocessing, plan.device, precision)
        forward = torch_forward
    batch_size = options.batch_size
    if batch_size is None:
        batch_size = DEFAULT_BATCH
        if torch_forward is not None and plan.device.startswith("cuda"):
            batch_size = fit_batch_size(torch_forward, verification_batch(preprocessing, 8))
    runtime = RuntimeInfo(plan.device if torch_forward is not None else "cpu",
                          "torch" if torch_forward is not None else "onnx", precision,
                          options.decode_workers, tuple(notes))
    return Encoder(name, dim, preprocessing, weights_id, forward, batch_size=batch_size,
                   module=model, runtime=runtime, id_name=id_name)


def planned_runtime(encoder_name: str | None, options: EncoderOptions | None = None) -> RuntimeInfo | None:
    """Where the encoder `encoder_name` would run under `options`, without building it
    (a refused export or half precision can still fall back when it is built)."""
    if encoder_name is None:
        return None
    options = (options or EncoderOptions()).with_env()
    if encoder_name == "pixels":
        return RuntimeInfo(decode_workers=options.decode_workers)
    if encoder_name.startswith("onnx:"):
        return RuntimeInfo("cpu", "onnx", "fp32", options.decode_workers)
    plan = plan_for(options)
    return RuntimeInfo(plan.device, plan.runtime, plan.precision, options.decode_workers)

"""Encoding speed, every figure next to its bare reference measured in the same run.

1. End to end: `Memory.add_images` (what `vismem add` runs: read, hash, decode, resize,
   forward, commit) of 224x224 images (half JPEG, half PNG), for
   - "today": torch channels-last with decoding in one prefetch thread (the path before
     issue 12, still `--runtime torch --decode-workers 0`), and
   - "ours": the defaults (ONNX Runtime on the CPU, decode workers chosen by measuring),
   next to a bare ONNX Runtime session of the same model (exported here, plain float
   NCHW input) on pre-decoded, pre-normalised tensors at the same batch and threads.
2. Runtimes on pre-decoded tensors, same threads: torch eager, torch channels-last,
   bare ONNX Runtime, and our encoder's forward (ONNX, pixels in).
3. Decode workers: `add` of a folder of 4000x3000 JPEGs and of a folder of small PNGs
   with 0, 1, 2 decode workers and with the measured choice, next to our forward alone
   on the same images pre-decoded (the ceiling when decoding is free).
4. GPU (only when CUDA is visible): ResNet-50 fp16 end to end with decode workers 0..N,
   next to the bare fp16 forward; the worker count at which the GPU stops waiting.

ResNet-50 runs with random weights (saved to a file; speed does not depend on them).

    python benchmarks/encode.py [--images 512] [--resnet-images 128] [--large 48] [--small 384]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from vismem import Memory
from vismem.encoders import EncoderOptions

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "hubble_deep_field", "immunohistochemistry")
TODAY = EncoderOptions(runtime="torch", decode_workers=0)
CHOICES: list[str] = []  # what the measured worker choice said, from vismem.embed's log


class _Choices(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        CHOICES.append(record.getMessage())


def write_images(folder: Path, count: int, size: tuple[int, int], kinds=("jpg", "png"), seed: int = 0) -> Path:
    """`count` distinct photos of `size` in folder/x/ (a class subfolder), cycling `kinds`."""
    rng = np.random.default_rng(seed)
    (folder / "x").mkdir(parents=True)
    for i in range(count):
        photo = Image.fromarray(getattr(data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
        photo = photo.rotate(float(rng.uniform(-20, 20))).resize(size, Image.Resampling.BICUBIC)
        photo.putpixel((0, 0), (i % 256, i // 256, seed % 256))  # distinct content: no duplicates
        if size[0] * size[1] > 4_000_000:  # camera-like detail, so JPEG sizes are realistic
            noise = rng.normal(0, 6, (size[1], size[0], 3))
            photo = Image.fromarray(np.clip(np.asarray(photo) + noise, 0, 255).astype(np.uint8))
        photo.save(folder / "x" / f"{i:04d}.{kinds[i % len(kinds)]}", quality=90)
    return folder


def timed(work, repeats: int) -> float:
    """Best wall time of `repeats` runs of work() (best: least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def build(name: str, weights: Path | None, options: EncoderOptions):
    from vismem.encoders import create_encoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_encoder(name, weights=weights, options=options)


def add_images_rate(name: str, weights: Path | None, encoder, folder: Path, tmp: Path, count: int) -> float:
    """Seconds for Memory.add_images of `folder` into a fresh memory using `encoder`."""
    memory = _memory_with(name, weights, encoder, tmp)
    start = time.perf_counter()
    report = memory.add_images([folder])
    seconds = time.perf_counter() - start
    memory.close()
    assert len(report.added) == count, report.skipped[:3]
    return seconds


def _memory_with(name: str, weights: Path | None, encoder, tmp: Path) -> Memory:
    """A fresh memory for encoder `name` that reuses the already-built `encoder`."""
    memory = Memory.create(tmp / f"m{time.monotonic_ns()}", encoder=name, weights=weights,
                           encoder_options=EncoderOptions(runtime="torch", decode_workers=0))
    memory.use_encoder(encoder)
    return memory


def predecoded(encoder, folder: Path) -> np.ndarray:
    """uint8 (n, S, S, 3): the folder's images decoded and preprocessed, untimed."""
    return np.stack([encoder.preprocessing.apply(Image.open(p).convert("RGB"))
                     for p in sorted((folder / "x").iterdir())])


def normalised(encoder, pixels: np.ndarray) -> torch.Tensor:
    prep = encoder.preprocessing
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(prep.std).view(1, 3, 1, 1) * 255
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - mean) / std


def bare_onnx_session(module, example: torch.Tensor, path: Path, threads: int):
    """A plain ONNX Runtime session of `module` (float NCHW in), as a user would export it."""
    import onnxruntime as ort

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.to(memory_format=torch.contiguous_format), (example[:2],), str(path),
                          dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=True)
    settings = ort.SessionOptions()
    settings.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name


def in_batches(run, items, batch: int) -> None:
    for i in range(0, len(items), batch):
        run(items[i : i + batch])


def row(label: str, images: int, seconds: float, reference: float | None = None, ref_name: str = "") -> str:
    rate = images / seconds
    ratio = f"  {reference / seconds if reference else 0:5.2f}x {ref_name}" if reference else ""
    return f"  {label:58s} {rate:8.1f} img/s{ratio}"


def end_to_end(name: str, weights: Path | None, count: int, batch: int, repeats: int, tmp: Path,
               threads: int) -> list[str]:
    folder = write_images(tmp / f"e2e-{name}", count, (224, 224))
    warm = write_images(tmp / f"warm-{name}", batch, (224, 224), seed=99)
    today = build(name, weights, TODAY)
    ours = build(name, weights, EncoderOptions())
    lines = [f"{name}: {count} images 224x224 (JPEG+PNG), batch {batch}, {threads} threads; "
             f"ours runs {ours.runtime.describe()}"]
    for encoder in (today, ours):  # warm both runtimes up
        add_images_rate(name, weights, encoder, warm, tmp, batch)
    pixels = predecoded(ours, folder)
    tensor = normalised(ours, pixels).numpy()
    session, input_name = bare_onnx_session(ours.module, torch.from_numpy(tensor), tmp / f"{name}-bare.onnx",
                                            threads)
    bare = lambda: in_batches(lambda x: session.run(None, {input_name: x}), tensor, batch)  # noqa: E731
    bare()
    t_today, t_ours, t_bare = float("inf"), float("inf"), float("inf")
    for _ in range(repeats):  # interleaved, so all three see the same machine load
        t_today = min(t_today, add_images_rate(name, weights, today, folder, tmp, count))
        t_ours = min(t_ours, add_images_rate(name, weights, ours, folder, tmp, count))
        t_bare = min(t_bare, timed(bare, 1))
    lines.append(row("today: add, torch channels-last, decode in a thread", count, t_today))
    lines.append(row("ours:  add, defaults", count, t_ours, t_today, "today"))
    lines.append(row("bare ONNX Runtime forward, pre-decoded tensors", count, t_bare))
    lines.append(f"  {'ours / bare ONNX Runtime':58s} {t_bare / t_ours:8.2f}x")
    if CHOICES:
        lines.append(f"  measured choice in the last add: {CHOICES[-1]}")
    return lines


def runtimes(name: str, weights: Path | None, count: int, batch: int, repeats: int, tmp: Path,
             threads: int) -> list[str]:
    ours = build(name, weights, EncoderOptions())
    folder = tmp / f"e2e-{name}"
    pixels = predecoded(ours, folder)[:count]
    tensor = normalised(ours, pixels)
    module = ours.module.eval()
    session, input_name = bare_onnx_session(module, tensor, tmp / f"{name}-rt.onnx", threads)

    def torch_run(memory_format):
        def run():
            model = module.to(memory_format=memory_format)
            with torch.inference_mode():
                in_batches(lambda x: model(x.contiguous(memory_format=memory_format)), tensor, batch)
        return run

    runs = {
        "torch eager": torch_run(torch.contiguous_format),
        "torch channels-last": torch_run(torch.channels_last),
        "bare ONNX Runtime (float NCHW in)": lambda: in_batches(
            lambda x: session.run(None, {input_name: x}), tensor.numpy(), batch),
        "our encoder's forward (ONNX Runtime, uint8 pixels in)": lambda: in_batches(
            ours.embed_preprocessed, pixels, batch),
    }
    best = {label: float("inf") for label in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(repeats):
        for label, run in runs.items():
            best[label] = min(best[label], timed(run, 1))
    eager_s = best["torch eager"]
    lines = [f"{name}: forward only on {count} pre-decoded images, batch {batch}, {threads} threads"]
    lines += [row(label, count, seconds, eager_s, "torch eager") for label, seconds in best.items()]
    return lines


def decode_workers(label: str, folder: Path, count: int, batch: int, repeats: int, tmp: Path) -> list[str]:
    name = "efficientnet_lite0"
    encoders = {w: build(name, None, EncoderOptions(decode_workers=w, batch_size=batch)) for w in (0, 1, 2, None)}
    ours = encoders[None]
    for encoder in encoders.values():
        add_images_rate(name, None, encoder, tmp / f"warm-{name}", tmp, 32)
    pixels = predecoded(ours, folder)
    forward = lambda: in_batches(ours.embed_preprocessed, pixels, ours.batch_size)  # noqa: E731
    best = {w: float("inf") for w in encoders}
    t_forward = float("inf")
    for _ in range(repeats):
        for workers, encoder in encoders.items():
            best[workers] = min(best[workers], add_images_rate(name, None, encoder, folder, tmp, count))
        t_forward = min(t_forward, timed(forward, 1))
    from vismem.embed import usable_cpus

    lines = [f"{label}: add with {name} ({ours.runtime.runtime}), {count} images, batch {batch}, "
             f"{usable_cpus()} cores"]
    for workers, seconds in best.items():
        text = ("measured choice" if workers is None
                else f"{workers} decode workers" + (" (a thread)" if workers == 0 else ""))
        lines.append(row(f"add, {text}", count, seconds, best[0], "0 workers"))
    lines.append(row("our forward alone on pre-decoded pixels (the ceiling)", count, t_forward))
    if CHOICES:
        lines.append(f"  measured choice in the last add: {CHOICES[-1]}")
    return lines


def gpu_section(tmp: Path, weights: Path, count: int, repeats: int) -> list[str]:
    if not torch.cuda.is_available():
        return ["GPU: no CUDA device visible on this machine; GPU figures not measured"]
    from vismem.embed import usable_cpus

    folder = write_images(tmp / "gpu", count, (640, 480), kinds=("jpg",))
    options = EncoderOptions(device="cuda", decode_workers=0)
    base = build("resnet50", weights, options)
    pixels = predecoded(base, folder)
    bare = lambda: in_batches(base.embed_preprocessed, pixels, base.batch_size)  # noqa: E731
    bare()
    t_bare = min(timed(bare, 1) for _ in range(repeats))
    lines = [f"GPU {torch.cuda.get_device_name(0)}: resnet50 {base.runtime.describe()}, batch {base.batch_size}, "
             f"{count} JPEGs 640x480"]
    lines.append(row("bare forward on pre-decoded pixels", count, t_bare))
    stop = None
    for workers in [0, 1, 2, 4, 8, 16][: 2 + max(0, usable_cpus().bit_length() - 1)]:
        encoder = build("resnet50", weights, EncoderOptions(device="cuda", decode_workers=workers))
        add_images_rate("resnet50", weights, encoder, folder, tmp, count)
        seconds = min(add_images_rate("resnet50", weights, encoder, folder, tmp, count) for _ in range(repeats))
        lines.append(row(f"add, {workers} decode workers", count, seconds, t_bare, "of bare") )
        if stop is None and t_bare / seconds >= 0.9:
            stop = workers
    lines.append(f"  GPU stops waiting (>= 0.9x bare) at {stop} decode workers" if stop is not None
                 else "  GPU still waits on decoding at the largest worker count tried")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="224x224 images for EfficientNet-Lite0")
    parser.add_argument("--resnet-images", type=int, default=128, help="224x224 images for ResNet-50")
    parser.add_argument("--large", type=int, default=48, help="4000x3000 JPEGs")
    parser.add_argument("--small", type=int, default=384, help="small (96x96) PNGs")
    parser.add_argument("--large-batch", type=int, default=8, help="batch for the 4000x3000 JPEGs (>= 3 batches "
                        "are needed for the measured worker choice)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=["e2e", "runtimes", "workers", "gpu"], action="append")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    embed_log = logging.getLogger("vismem.embed")
    embed_log.setLevel(logging.INFO)
    embed_log.addHandler(_Choices())
    sections = set(args.only or ["e2e", "runtimes", "workers", "gpu"])
    print(f"torch {torch.__version__}, {threads} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        torch.manual_seed(0)
        from torchvision.models import resnet50

        weights = tmp / "resnet50-random.pth"
        torch.save(resnet50().state_dict(), weights)
        models = [("efficientnet_lite0", None, args.images), ("resnet50", weights, args.resnet_images)]
        for name, w, count in models:
            if "e2e" in sections or "runtimes" in sections:
                if "e2e" in sections:
                    lines = end_to_end(name, w, count, args.batch, args.repeats, tmp, threads)
                else:
                    write_images(tmp / f"e2e-{name}", count, (224, 224))
                    write_images(tmp / f"warm-{name}", args.batch, (224, 224), seed=99)
                    lines = []
                if "runtimes" in sections:
                    lines += runtimes(name, w, min(count, 128), args.batch, args.repeats, tmp, threads)
                print("\n".join(lines), flush=True)
        if "workers" in sections:
            if not (tmp / "warm-efficientnet_lite0").exists():
                write_images(tmp / "warm-efficientnet_lite0", args.batch, (224, 224), seed=99)
            large = write_images(tmp / "large", args.large, (4000, 3000), kinds=("jpg",))
            lines = decode_workers("4000x3000 JPEGs", large, args.large, args.large_batch, args.repeats, tmp)
            print("\n".join(lines), flush=True)
            small = write_images(tmp / "small", args.small, (96, 96), kinds=("png",))
            print("\n".join(decode_workers("96x96 PNGs", small, args.small, args.batch, args.repeats, tmp)), flush=True)
        if "gpu" in sections:
            print("\n".join(gpu_section(tmp, weights, 512, args.repeats)), flush=True)


if __name__ == "__main__":
    main()

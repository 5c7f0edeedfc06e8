"""Encoder pipeline throughput next to a bare torch forward of the same model.

Ours: files on disk -> read, hash, decode, resize, crop (prefetch thread) -> forward ->
L2-normalised vectors, through `Memory.embed_images`. Bare: the same model's forward on
the same images already decoded, resized and normalised, at the same batch size.
The ratio is what decoding and our plumbing cost on top of the model.

    python benchmarks/encode.py [--encoder efficientnet_lite0] [--images 128] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from skimage import data

from vismem import Memory

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "hubble_deep_field")


def write_photos(folder: Path, count: int) -> list[Path]:
    """Real photos at their native sizes (300x451 .. 512x512), as JPEG and PNG."""
    paths = []
    for i in range(count):
        photo = Image.fromarray(getattr(data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
        photo = photo.rotate(i % 7)  # distinct content, so nothing is deduplicated
        path = folder / f"{i:04d}.{'jpg' if i % 2 else 'png'}"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), args.images)
        memory = Memory.create(Path(tmp) / "mem", encoder=args.encoder)
        encoder = memory.encoder
        encoder.batch_size = args.batch
        memory.embed_images(paths[: args.batch])  # warm-up

        # Bare input: decoded and preprocessed up front (not timed), then only the forward.
        images = [Image.open(p).convert("RGB") for p in paths]
        prep = encoder.preprocessing
        mean = torch.tensor(prep.mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(prep.std).view(1, 3, 1, 1) * 255
        tensor = ((torch.from_numpy(encoder.preprocess(images)).permute(0, 3, 1, 2).float() - mean)
                  / std).contiguous(memory_format=torch.channels_last)
        forward = encoder.module  # the very module our encoder runs
        if forward is None:
            raise SystemExit(f"{args.encoder} is not a torch encoder")

        ours, bare = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            start = time.perf_counter()
            vectors, kept, skipped = memory.embed_images(paths)
            ours.append(time.perf_counter() - start)
            assert len(kept) == args.images and not skipped
            start = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, len(tensor), args.batch):
                    forward(tensor[i : i + args.batch])
            bare.append(time.perf_counter() - start)
        memory.close()

    ours_s, bare_s = min(ours), min(bare)
    print(f"encoder {args.encoder}, {args.images} images, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  vismem pipeline (read+decode+resize+forward): {args.images / ours_s:7.2f} img/s")
    print(f"  bare torch forward (pre-decoded batch):       {args.images / bare_s:7.2f} img/s")
    print(f"  overhead ratio (ours time / bare time):       {ours_s / bare_s:7.3f}x")


if __name__ == "__main__":
    main()

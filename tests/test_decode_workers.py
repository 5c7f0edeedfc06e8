"""Decoding in worker processes: same pixels, same order, same skip reasons as in a thread;
and the worker count chosen from measured decode and model times."""

import logging

import numpy as np
import pytest
from PIL import Image

from vismem import Memory
from vismem.embed import prepare_in_batches, workers_for
from vismem.encoders import EncoderOptions, create_encoder
from vismem.images import find_images


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Real images (JPEG and PNG, several sizes) with unreadable files among them."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir()
        for i in range(14):
            size = (40 + 7 * i, 30 + 5 * i)
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    (root / "a" / "03.png").write_bytes(b"")  # empty
    (root / "a" / "07.png").write_bytes(b"\x89PNG not really")  # corrupt
    jpeg = (root / "b" / "04.jpg").read_bytes()
    (root / "b" / "04.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # truncated
    (root / "b" / "11.png").write_bytes(b"hello")  # not an image
    return root


def prepare_all(encoder, files, size=5, **options):
    out = [step for step in prepare_in_batches(files, encoder, size, **options)]
    chunks = [list(chunk) for chunk, _, _ in out]
    prepared = [p for _, batch, _ in out for p in batch]
    skipped = [s for _, _, batch in out for s in batch]
    return chunks, prepared, skipped


def test_workers_decode_like_the_thread_in_order_with_reasons(mixed_folder):
    files, _ = find_images([mixed_folder])
    thread = create_encoder("pixels", options=EncoderOptions(decode_workers=0))
    workers = create_encoder("pixels", options=EncoderOptions(decode_workers=2))
    chunks0, prepared0, skipped0 = prepare_all(thread, files, thumbnails=True)
    chunks2, prepared2, skipped2 = prepare_all(workers, files, thumbnails=True)
    assert chunks0 == chunks2
    assert [s.path.rsplit("/", 2)[-2:] for s in skipped2] == [["a", "03.png"], ["a", "07.png"],
                                                                ["b", "04.jpg"], ["b", "11.png"]]
    assert skipped2 == skipped0
    assert "empty file" in skipped2[0].reason and "not an image" in skipped2[3].reason
    assert [p.file for p in prepared2] == [f for f in files if str(f.path) not in {s.path for s in skipped2}]
    for a, b in zip(prepared0, prepared2, strict=True):
        assert a.content_hash == b.content_hash and a.size == b.size and a.thumbnail == b.thumbnail
        assert np.array_equal(a.pixels, b.pixels)


def test_known_content_is_not_sent_to_workers(mixed_folder):
    files, _ = find_images([mixed_folder])
    workers = create_encoder("pixels", options=EncoderOptions(decode_workers=2))
    _, first, _ = prepare_all(workers, files)
    known = {first[0].content_hash: 41, first[5].content_hash: 42}
    _, again, skipped = prepare_all(workers, files, lookup_hashes=lambda digests: {d: known[d] for d in digests
                                                                                  if d in known})
    assert [p.known_as for p in again if p.known_as is not None] == [41, 42]
    assert again[0].pixels is None and again[1].pixels is not None and len(skipped) == 4


def test_memory_add_with_workers_matches_a_thread(mixed_folder, tmp_path):
    reports, vectors, paths = [], [], []
    for workers in (0, 2):
        options = EncoderOptions(decode_workers=workers, batch_size=6)
        with Memory.create(tmp_path / f"m{workers}", encoder="pixels", encoder_options=options) as memory:
            report = memory.add_images([mixed_folder])
            reports.append(report)
            vectors.append(memory.store.vectors(report.added)[1])
            paths.append([item.path for item in memory.store.items(report.added)])
    assert reports[0].added == reports[1].added and len(reports[0].added) == 24
    assert paths[0] == paths[1] == sorted(paths[1])  # input order
    assert reports[0].skipped == reports[1].skipped and len(reports[1].errors) == 4
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_worker_count_follows_the_measured_costs():
    assert workers_for(0.002, 0.005, cpus=2) == 0  # one thread keeps up with the model
    assert workers_for(0.043, 0.005, cpus=2) == 2  # big photos on a fast model: every core
    assert workers_for(0.043, 0.005, cpus=16) == 9
    assert workers_for(0.043, 0.034, cpus=16) == 2
    assert workers_for(0.01, 0.0, cpus=4) == 4


def test_measured_choice_takes_workers_when_decoding_is_the_slow_half(tmp_path, caplog):
    """The pixels encoder has no model to speak of, so large PNGs make decoding the
    bottleneck and the measured choice moves it to worker processes."""
    rng = np.random.default_rng(1)
    (tmp_path / "x").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(tmp_path / "x" / f"{i}.png")
    files, _ = find_images([tmp_path])
    encoder = create_encoder("pixels", options=EncoderOptions(batch_size=4))
    with caplog.at_level(logging.INFO, logger="vismem.embed"):
        _, prepared, _ = prepare_all(encoder, files, size=4)
    assert len(prepared) == 16 and [p.file for p in prepared] == files
    chosen = [r.getMessage() for r in caplog.records if "decode workers" in r.getMessage()]
    assert len(chosen) == 1 and not chosen[0].startswith("decode workers: 0")


def test_measured_choice_keeps_a_thread_when_the_model_is_slower(lite0, digit_folders, caplog):
    train, _ = digit_folders
    files, _ = find_images([train])
    with caplog.at_level(logging.INFO, logger="vismem.embed"):
        for _, prepared, _ in prepare_in_batches(files, lite0, 16):
            lite0.embed_preprocessed(np.stack([p.pixels for p in prepared]))
    chosen = [r.getMessage() for r in caplog.records if "decode workers" in r.getMessage()]
    assert len(chosen) == 1 and chosen[0].startswith("decode workers: 0")

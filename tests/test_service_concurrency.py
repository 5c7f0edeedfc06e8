"""A running `vismem serve` and `vismem add` processes writing one memory at once, on the
same and on overlapping folders: every image ends up in the memory exactly once.

The store refuses duplicate content inside its write transaction; this checks that it
holds through the service's upload path too, with real processes and real commits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import pytest
from conftest import png_bytes as png
from conftest import start_server, stop_server

from vismem import Memory
from vismem.datasets import write_image_folder
from vismem.images import content_hash

TOKEN = "concurrency-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.slow


def test_server_and_cli_writers_add_each_image_once(tmp_path, digits):
    images, labels = digits
    chosen = list(range(0, 96))
    # folder a: images 0-63; folder b: 32-95 (half of it also in a); uploads: every third of 0-95
    a = write_image_folder(tmp_path / "a", images, labels, chosen[:64])
    b = write_image_folder(tmp_path / "b", images, labels, chosen[32:])
    uploads = [(i, png(images[i])) for i in chosen[::3]]
    distinct = {content_hash(png(images[i])) for i in chosen}  # write_image_folder writes these bytes
    assert len(distinct) == len(chosen)  # the test's own premise: 96 different images

    Memory.create(tmp_path / "mem", encoder="pixels").close()
    process, url = start_server(tmp_path / "mem", env={"VISMEM_TOKEN": TOKEN})
    answers: list[dict] = []
    failures: list[str] = []

    def upload() -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
            for start in range(0, len(uploads), 4):
                batch = uploads[start : start + 4]
                for i, data in batch:  # one label per request, as the form takes
                    response = http.post("/items", data={"label": labels[i], "source": "web"},
                                         files=[("files", (f"{i}.png", data, "image/png"))])
                    if response.status_code != 201:
                        failures.append(response.text)
                    else:
                        answers.append(response.json())

    try:
        writers = [subprocess.Popen([sys.executable, "-m", "vismem", "add", str(tmp_path / "mem"), str(folder),
                                     "--batch-size", "4", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
                   for folder in (a, a, b, b)]
        uploader = threading.Thread(target=upload)
        uploader.start()
        outputs = [writer.communicate(timeout=300) for writer in writers]
        uploader.join()
        served = httpx.get(url + "/stats").json()["items"]
    finally:
        log = stop_server(process)
    assert not failures and "Traceback" not in log
    reports = []
    for writer, (stdout, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
        reports.append([json.loads(line) for line in stdout.splitlines()][-1])

    # every writer accounted for each of its images: added, or a duplicate of a live item
    for report, given in zip(reports, (64, 64, 64, 64), strict=True):
        assert report["added"] + report["skipped"] == given
        assert all(s["reason"].startswith("duplicate of item") for s in report["skipped_items"])
    for answer in answers:
        assert answer["added"] + answer["skipped"] == 1
    added = sum(r["added"] for r in reports) + sum(a["added"] for a in answers)
    assert added == len(distinct)  # nobody added anything twice, and nothing was lost

    with Memory.open(tmp_path / "mem") as memory:
        items = memory.items(memory.ids())
    hashes = [item.content_hash for item in items]
    assert len(hashes) == len(set(hashes)) == len(distinct) == served
    assert set(hashes) == distinct
    label_of = {content_hash(png(images[i])): labels[i] for i in chosen}
    assert all(item.label == label_of[item.content_hash] for item in items)

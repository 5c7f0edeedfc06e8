"""Ingestion on a real 2-node Ray cluster (`ray.cluster_utils.Cluster` on this host): the
same items as a plain add, skips with reasons, content already held is not encoded again."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import free_port, json_lines
from vismem import Memory
from vismem.datasets import split_per_class, write_image_folder
from vismem.ingest_ray import plan_for
from vismem.errors import VismemError

pytestmark = pytest.mark.ray


def test_the_plan_leaves_cpus_to_read_and_gives_each_gpu_an_actor():
    assert plan_for({"CPU": 2.0}).actors == 1
    assert plan_for({"CPU": 8.0}).actors == 4
    assert plan_for({"CPU": 3.0}, actors=5).actors == 2   # never every CPU
    assert plan_for({"CPU": 32.0, "GPU": 4.0}).gpus == 1.0 and plan_for({"CPU": 32.0, "GPU": 4.0}).actors == 4
    with pytest.raises(VismemError, match="at least 2"):
        plan_for({"CPU": 1.0})


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def folder(digits, tmp_path_factory):
    images, labels = digits
    root = tmp_path_factory.mktemp("ray")
    chosen = [i for i in split_per_class(labels, [4], seed=3)[0] if labels[i] in ("1", "2", "3")]
    write_image_folder(root / "train", images, labels, chosen)
    (root / "train" / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "train" / "2" / "empty.jpg").write_bytes(b"")
    return root / "train"


def test_an_address_where_no_ray_answers_fails_in_seconds(folder, tmp_path, cli):
    """A typo in --ray HOST:PORT: ray.init retried it for minutes, printing its log lines."""
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "pixels", check=True)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = cli("add", memdir, folder, "--ray", address, "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: no Ray cluster answers at {address} (Connection refused): check "
                                          "the address, or start a cluster there (`ray start --head`); `--ray "
                                          "local` starts one for this run"]
    with Memory.open(memdir) as memory:
        assert len(memory) == 0


def vectors_by_path(memory):
    ids = memory.ids()
    found, vectors = memory.vectors(ids)
    path_of = {i.id: i.path for i in memory.items(found.tolist())}
    return {path_of[int(i)]: v for i, v in zip(found, vectors, strict=True)}


def test_ray_adds_what_a_plain_add_adds(cluster, folder, tmp_path, lite0):
    plain = Memory.create(tmp_path / "plain", encoder="efficientnet_lite0")
    plain.use_encoder(lite0)
    expected = plain.add_images([folder])
    on_ray = Memory.create(tmp_path / "ray", encoder="efficientnet_lite0")
    on_ray.use_encoder(lite0)
    committed: list[list[int]] = []
    report = on_ray.add_images([folder], ray=cluster.address, batch_size=4, on_commit=committed.append)
    assert len(report.added) == len(expected.added) == 12
    assert sorted(len(c) for c in committed) and sum(len(c) for c in committed) == 12
    assert sorted((s.path, s.reason) for s in report.skipped) == sorted((s.path, s.reason) for s in expected.skipped)
    assert {s.path.rsplit("/", 1)[1] for s in report.errors} == {"broken.png", "empty.jpg"}
    a, b = vectors_by_path(plain), vectors_by_path(on_ray)
    assert list(a) == list(b)  # the same files, given ids in the same order
    assert min(float(np.dot(a[p], b[p])) for p in a) > 0.9999
    assert on_ray.class_counts() == plain.class_counts() == {"1": 4, "2": 4, "3": 4}
    assert on_ray.thumbnail(report.added[0])[:2] == b"\xff\xd8"


def test_a_rerun_encodes_only_what_the_memory_lacks(cluster, folder, tmp_path):
    memory = Memory.create(tmp_path / "mem", encoder="pixels")
    first = memory.add_images([folder / "1"], label="1")       # as if a run had stopped here
    report = memory.add_images([folder], ray=cluster.address, batch_size=3)
    assert len(report.added) == 8 and len(report.duplicates) == 4
    assert {s.reason for s in report.duplicates} == {f"duplicate of item {i}" for i in first.added}
    again = memory.add_images([folder], ray=cluster.address)
    assert not again.added and len(again.duplicates) == 12 and len(memory) == 12
    copies = memory.add_images([folder / "3"], label="3", ray=cluster.address, allow_duplicates=True)
    assert len(copies.added) == 4 and len(memory) == 16   # copies reuse the stored vectors


def pass_two_rows(files):
    """The rows pass 1 hands to `decode_and_encode` for these files."""
    from vismem.images import content_hash

    return [{"path": str(f.resolve()), "given": str(f), "label": "", "source": "",
             "hash": content_hash(f.read_bytes())} for f in files]


def test_decoding_runs_in_tasks_of_its_own_beside_the_encoder_actors(cluster, folder, tmp_path):
    """Ray Data fuses maps whose resource requests are equal: decoding (one CPU) used to run
    inside the one-CPU encoder actors of a CPU-only cluster, and the CPUs the plan kept for
    decoding sat idle. Its tasks now ask for the memory their worst case takes."""
    import ray

    from vismem.encoders import EncoderOptions
    from vismem.images import DEFAULT_MAX_PIXELS
    from vismem.ingest_ray import decode_and_encode

    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        rows = pass_two_rows(sorted((folder / "3").glob("*.png")))  # 1/ holds a broken file
        plan = plan_for(ray.cluster_resources())
        assert plan.gpus == 0
        ds = decode_and_encode(ray, rows, plan, memory.store.identity, memory.encoder.preprocessing,
                               EncoderOptions(), batch_size=2, max_pixels=DEFAULT_MAX_PIXELS)
        done = ds.take_all()
    assert sorted(r["given"] for r in done) == sorted(r["given"] for r in rows)
    assert [r["error"] for r in done] == [""] * len(rows)
    assert np.asarray([r["vector"] for r in done]).shape == (len(rows), memory.dim)
    stats = ds.stats()
    assert "MapBatches(decode_files)" in stats and "MapBatches(EncodeActor)" in stats
    assert "decode_files)->MapBatches(EncodeActor)" not in stats, stats


def test_several_encoder_actors_yield_the_files_in_their_order(cluster, folder, tmp_path):
    """Ray Data yields blocks as they finish: with two encoder actors, the first run gave
    the files out of order, and so ids in another order than a plain add's. Each run now
    keeps the input order, and the process-wide Ray setting is left as it was."""
    import ray

    from vismem.encoders import EncoderOptions
    from vismem.images import DEFAULT_MAX_PIXELS
    from vismem.ingest_ray import RayPlan, decode_and_encode

    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        rows = pass_two_rows(sorted(f for d in ("2", "3") for f in (folder / d).glob("*.png")))
        # two actors that ask for no CPU, so that decoding keeps both of this cluster's
        ds = decode_and_encode(ray, rows, RayPlan(actors=2, cpus=0.0, gpus=0.0), memory.store.identity,
                               memory.encoder.preprocessing, EncoderOptions(), batch_size=1,
                               max_pixels=DEFAULT_MAX_PIXELS)
        runs = [[r["given"] for r in ds.take_all()] for _ in range(2)]
    assert runs == [[r["given"] for r in rows]] * 2
    assert not ray.data.DataContext.get_current().execution_options.preserve_order


@pytest.mark.milvus
def test_ray_fills_a_milvus_memory(cluster, folder, milvus_location):
    with Memory.create(milvus_location, encoder="pixels") as memory:
        report = memory.add_images([folder], ray=cluster.address)
        assert len(report.added) == 12 and len(memory) == 12
        hit = memory.classify([folder / "2" / sorted(p.name for p in (folder / "2").iterdir())[0]], k=1)[0]
        assert hit.neighbors[0].distance == pytest.approx(0, abs=1e-5)


def test_ray_adds_to_a_memory_of_your_own_onnx_model(cluster, folder, tmp_path, cli):
    """`vismem add --ray` on an `onnx:PATH` memory always failed: the driver loaded the
    encoder (for its preprocessing) with --runtime torch, which an onnx:PATH encoder refuses."""
    from test_onnx_runtime import export_user_model

    model = tmp_path / "mine.onnx"
    export_user_model(model)
    plain, on_ray = tmp_path / "plain", tmp_path / "ray"
    for memdir in (plain, on_ray):
        cli("create", memdir, "--encoder", f"onnx:{model}", check=True)
    cli("add", plain, folder)
    added = cli("add", on_ray, folder, "--ray", "local", "--json")
    assert added.returncode == 3, added.stderr  # broken.png and empty.jpg are skipped
    assert json_lines(added)[-1]["added"] == 12
    with Memory.open(plain) as a, Memory.open(on_ray) as b:
        ours, theirs = vectors_by_path(a), vectors_by_path(b)
    assert list(ours) == list(theirs)
    assert min(float(np.dot(ours[p], theirs[p])) for p in ours) > 0.9999


def test_a_runtime_the_encoder_cannot_run_on_is_refused_before_ray_starts(cluster, folder, tmp_path, cli):
    """The driver passed --runtime torch to every encoder, so the pixels encoder took it,
    on Ray and off; on Ray, a --runtime an encoder refuses failed in each actor. Now it is
    refused as a plain add refuses it, before anything is read."""
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "pixels", check=True)
    refused = cli("add", memdir, folder, "--ray", "local", "--runtime", "torch", "--json")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == "error: encoder pixels has no model to run on torch: drop --runtime torch\n"
    with Memory.open(memdir) as memory:
        assert len(memory) == 0

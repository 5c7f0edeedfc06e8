"""The arithmetic behind docs/scale.md: bytes, machines, GPU-hours and dollars.

    python docs/scale_plan.py            # prints the tables that docs/scale.md shows

Every input is a named constant below, marked MEASURED (on our 2-core box), PUBLISHED
(with its source) or ASSUMED (a planning choice). Change one and rerun; a test checks
that docs/scale.md shows exactly what this prints.
"""

from __future__ import annotations

import math

SIZES = (10_000_000, 100_000_000, 1_000_000_000)
DIMS = (512, 2048)
GB = 1e9

# ---- bytes per item -----------------------------------------------------------------
# ASSUMED: scalar fields of one vismem item in Milvus (id 8, label ~16, source ~32,
# SHA-256 hex 64, weight 4, prune count 8, added_at 8, relabelled_from ~4, path ~64,
# meta ~40 bytes of JSON).
METADATA_BYTES = 250
# ASSUMED: Milvus HNSW with M=16 keeps 2*M 4-byte links on layer 0, plus upper layers.
HNSW_LINK_BYTES = 2 * 16 * 4 + 8
# ASSUMED: DiskANN's graph on disk, max_degree 56 (Milvus default) 4-byte links.
DISKANN_LINK_BYTES = 56 * 4
# PUBLISHED (Milvus DiskANN docs): PQ codes kept in RAM = 0.125 x raw vector bytes by default
# (search_cache_budget / pq_code_budget_gb_ratio); we halve it at 2048-d x 1B.
DISKANN_PQ_RATIO = 0.125
# ASSUMED: RAM headroom for growing segments, compaction and load spikes.
HEADROOM = 1.5


def vector_bytes(dim: int) -> dict[str, float]:
    """Bytes per vector in each encoding (PQ: one byte per 8 dimensions; binary: one bit each)."""
    return {"float32": 4 * dim, "float16": 2 * dim, "IVF-PQ (m=d/8, 8 bits)": dim / 8 + 8,
            "binary (1 bit/dim)": dim / 8}


# ---- machines (AWS us-east-1 on-demand Linux list prices, USD/hour) ---------------------
# PUBLISHED: aws.amazon.com/ec2/pricing/on-demand as we know them; g5.xlarge ($1.006) was
# re-checked for this plan against a June 2026 price summary. Prices move: rerun with yours.
MACHINES = {
    "r6i.2xlarge": (64, 0, 0.504),          # (GiB RAM, TB local NVMe, $/h)
    "r6i.4xlarge": (128, 0, 1.008),
    "r6i.8xlarge": (256, 0, 2.016),
    "r6i.16xlarge": (512, 0, 4.032),
    "i4i.4xlarge": (128, 3.75, 1.373),
    "i4i.8xlarge": (256, 7.5, 2.746),
}
S3_PER_GB_MONTH = 0.023       # PUBLISHED: S3 Standard, first 50 TB
# ASSUMED: a Milvus cluster (100M and up) also runs coordinators and an index node
# (2 x m6i.2xlarge, $0.384/h), etcd (3 x m6i.xlarge, $0.192/h) and Pulsar or Kafka
# (3 x m6i.2xlarge). At 10M one Milvus standalone runs on the query node itself.
CLUSTER_BASE_PER_HOUR = 5 * 0.384 + 3 * 0.192
HOURS_PER_MONTH = 730


def serving_plan(n: int, dim: int) -> dict:
    """Milvus index, RAM, disk and query nodes for n vectors of dim (one replica)."""
    raw = n * 4 * dim
    meta = n * METADATA_BYTES
    if n <= 10_000_000:
        index, ram, disk, recall = "HNSW (M=16)", raw + n * HNSW_LINK_BYTES + meta, 0.0, "measured"
    else:
        ratio = DISKANN_PQ_RATIO / (2 if dim >= 2048 and n >= 1_000_000_000 else 1)
        index = f"DISKANN (PQ {ratio:g} of raw in RAM)"
        ram, disk, recall = raw * ratio + meta, raw + n * DISKANN_LINK_BYTES, "published"
    need_ram = ram * HEADROOM
    # The cheapest count of one machine type that holds the RAM (and the disk, for DiskANN).
    best = None
    for name, (gib, tb, price) in MACHINES.items():
        if disk and not tb:
            continue
        if not disk and tb:
            continue
        count = max(math.ceil(need_ram / (gib * 2**30)), math.ceil(disk / (tb * 1e12)) if disk else 1)
        if n <= 10_000_000 and count > 1:
            continue  # a standalone Milvus: one machine
        cost = count * price
        if best is None or cost < best[2]:
            best = (name, count, cost)
    name, count, cost = best
    stored = raw + meta + (n * DISKANN_LINK_BYTES if disk else n * HNSW_LINK_BYTES)
    return {"index": index, "ram_gb": ram / GB, "disk_gb": disk / GB, "nodes": f"{count} x {name}",
            "node_month": cost * HOURS_PER_MONTH, "s3_month": 2 * stored / GB * S3_PER_GB_MONTH,
            "base_month": 0.0 if n <= 10_000_000 else CLUSTER_BASE_PER_HOUR * HOURS_PER_MONTH,
            "recall": recall}


# ---- encoding -----------------------------------------------------------------------
# MEASURED here for the issue "Encoding at hardware speed": ONNX Runtime fp32, 2 threads,
# batch 32, img/s on this 2-vCPU box (about one c6i.large), model only.
CPU_ONNX = {"ResNet-50": 29.3, "EfficientNet-Lite0": 199.0}
# MEASURED here (`python benchmarks/ray_ingest.py --decode`, best of two quiet runs' worse):
# CPU time to decode, resize and crop a real photo of ImageNet size (500x375 JPEG): 3.4 ms,
# so ~290 img/s per vCPU. A 12 MP camera-like JPEG costs 180-190 ms (entropy decoding;
# draft-mode DCT scaling does not remove it): budget 50x the decoding for phone photos.
DECODE_PER_VCPU = 290.0
# PUBLISHED, NVIDIA DeepLearningExamples, batch 256, mixed precision, img/s per GPU:
# ResNet-50 v1.5 on T4 1,198 (PyTorch, pytorch-21.03 container) and on A100-80GB 7,910
# (MXNet with DALI, data + compute, mxnet-22.10); EfficientNet-B0 on A100-80GB 10,239
# (PyTorch). EfficientNet-Lite0 has B0's ~0.4 GFLOPs without squeeze-excitation, so we
# take B0's figure for it: EXTRAPOLATED.
GPU_RATE = {("ResNet-50", "T4"): 1198.0, ("ResNet-50", "A100"): 7910.0,
            ("EfficientNet-Lite0", "A100"): 10239.0}
# PUBLISHED list prices, $/h per GPU or per 2-vCPU machine: g4dn.xlarge (1 T4) $0.526;
# p4d.24xlarge (8 A100-40GB) $32.7726, i.e. $4.10 per GPU; c6i.large (2 vCPU) $0.085.
PRICE = {"T4": 0.526, "A100": 32.7726 / 8, "CPU": 0.085}


def encoding_plan(n: int) -> list[dict]:
    """Hours and dollars to encode n images: the model where it runs, plus decoding on
    CPU workers (a Ray cluster scales the two apart: decode tasks on cheap CPU nodes,
    encoder actors on GPUs)."""
    decode_h = n / DECODE_PER_VCPU / 3600                 # vCPU-hours
    decode_usd = decode_h * PRICE["CPU"] / 2
    rows = []
    for (model, where), rate, source in (
        *(((m, "CPU"), r, "measured") for m, r in CPU_ONNX.items()),
        *(((m, w), r, "published" if m == "ResNet-50" else "extrapolated") for (m, w), r in GPU_RATE.items()),
    ):
        hours = n / rate / 3600
        rows.append({"model": model, "on": {"CPU": "2 vCPU, ONNX fp32", "T4": "T4, fp16",
                                            "A100": "A100, fp16"}[where],
                     "img_s": rate, "hours": hours, "gpu": where != "CPU",
                     "usd": hours * PRICE[where], "decode_h": decode_h, "decode_usd": decode_usd,
                     "source": source})
    return rows


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:,.1f}" if x >= 1 else f"{x:.2f}"


def tables() -> str:
    out = ["### Bytes per vector", "", "| encoding | 512-d | 2048-d |", "|---|---|---|"]
    for name in vector_bytes(512):
        out.append(f"| {name} | {fmt(vector_bytes(512)[name])} | {fmt(vector_bytes(2048)[name])} |")
    out += ["", "### Vectors alone (float32 / IVF-PQ), GB", "", "| items | 512-d | 2048-d |", "|---|---|---|"]
    for n in SIZES:
        cells = [f"{fmt(n * 4 * d / GB)} / {fmt(n * vector_bytes(d)['IVF-PQ (m=d/8, 8 bits)'] / GB)}" for d in DIMS]
        out.append(f"| {n:,} | {cells[0]} | {cells[1]} |")
    out += ["", "### Serving on Milvus (one replica)", "",
            "| items | dim | index | RAM GB | NVMe GB | query nodes | nodes $/month | cluster base $/month "
            "| S3 $/month | total $/month |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for n in SIZES:
        for d in DIMS:
            p = serving_plan(n, d)
            out.append(f"| {n:,} | {d} | {p['index']} | {fmt(p['ram_gb'])} | {fmt(p['disk_gb'])} | "
                       f"{p['nodes']} | {fmt(p['node_month'])} | {fmt(p['base_month'])} | {fmt(p['s3_month'])} | "
                       f"{fmt(p['node_month'] + p['base_month'] + p['s3_month'])} |")
    out += ["", "### Encoding 1 billion images (10M: divide by 100)", "",
            "| model | on | img/s | model hours | GPU-hours | model $ | decode vCPU-hours | decode $ | total $ "
            "| source |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in encoding_plan(1_000_000_000):
        out.append(f"| {r['model']} | {r['on']} | {fmt(r['img_s'])} | {fmt(r['hours'])} | "
                   f"{fmt(r['hours']) if r['gpu'] else '-'} | {fmt(r['usd'])} | {fmt(r['decode_h'])} | "
                   f"{fmt(r['decode_usd'])} | {fmt(r['usd'] + r['decode_usd'])} | {r['source']} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables())

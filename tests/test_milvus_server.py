"""The private Milvus server the Milvus tests run against, and the facts the Milvus home
relies on: a real standalone server (not Lite), reachable only inside the namespace, whose
Strong reads see every write that returned."""

from __future__ import annotations

import os
import subprocess
import uuid

import numpy as np
import pytest

from conftest import unit_vectors

pytestmark = pytest.mark.milvus


@pytest.fixture
def client(milvus_uri):
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri.replace("milvus://", "http://"))
    yield client
    client.close()


def test_the_server_is_a_real_standalone_milvus_in_a_private_namespace(client):
    assert client.get_server_version().startswith("v2.3")
    interfaces = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert [line.split(":")[1].strip() for line in interfaces.splitlines()] == ["lo"]
    assert os.getpid() != 1 and os.environ["VISMEM_NETNS"] == "1"


def test_strong_reads_see_a_delete_and_an_upsert_as_soon_as_they_return(client):
    from pymilvus import DataType

    name = f"t_{uuid.uuid4().hex[:12]}"
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("label", DataType.VARCHAR, max_length=64)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="IP")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    try:
        x = unit_vectors(50, 8, seed=3)
        client.insert(name, [{"id": i, "vector": x[i], "label": "a"} for i in range(50)])
        for victim in (7, 19, 42):
            client.delete(name, ids=[victim])
            hits = client.search(name, [x[victim].tolist()], limit=5, consistency_level="Strong")[0]
            assert victim not in [h["id"] for h in hits]
        client.upsert(name, [{"id": 3, "vector": x[3], "label": "b"}])
        assert client.query(name, filter="id == 3", output_fields=["label"],
                            consistency_level="Strong")[0]["label"] == "b"
        assert np.isclose(client.search(name, [x[3].tolist()], limit=1)[0][0]["distance"], 1, atol=1e-5)
    finally:
        client.drop_collection(name)

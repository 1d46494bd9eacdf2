"""Search on Milvus (`index.backend: milvus`) against a real server: the embedded one of the pip package
`milvus`, started once for this module. A server that cannot start fails these tests (and CI): it does
not skip them."""

import json
import socket
import sys

import numpy as np
import pytest

from dsah.search import milvus
from dsah.search.index import HammingIndex, write_index


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with milvus.embedded_server(tmp_path_factory.mktemp("milvus")) as uri:  # pip `milvus`: a dev dependency
        yield uri


def clustered(count: int, bits: int, seed: int, centres: int = 12, flip: float = 0.12) -> np.ndarray:
    """+-1 codes around a few centres, as learned codes are (many ties, like the real thing)."""
    rng = np.random.default_rng(seed)
    centre = rng.choice([-1, 1], size=(centres, bits))[rng.integers(centres, size=count)]
    return np.where(rng.random((count, bits)) < flip, -centre, centre).astype(np.int8)


def build(folder, bits: int, count: int = 600, seed: int = 0) -> HammingIndex:
    codes = clustered(count, bits, seed)
    labels = np.eye(3, dtype=np.uint8)[np.arange(count) % 3]
    write_index(folder, codes, [f"img{i:04d}" for i in range(count)], labels, [f"store:{i}" for i in range(count)],
                {"bits": bits, "classes": ["a", "b", "c"], "store": None, "image_shape": [32, 32, 3]})
    return HammingIndex.load(folder)


def same_top_k(local, remote, k: int) -> None:
    """Distances equal rank by rank; ids equal except within the tie at the k-th distance."""
    assert [h.distance for h in remote] == [h.distance for h in local]
    last = local[-1].distance
    assert {h.id for h in remote if h.distance < last} == {h.id for h in local if h.distance < last}
    assert len(remote) == k


@pytest.mark.parametrize("bits", [12, 36, 64])
def test_bin_flat_returns_the_local_kernels_distances(server, tmp_path, bits):
    index = build(tmp_path / "index", bits)
    manifest = milvus.publish(index, milvus.MilvusSettings(server, f"t{bits}"), model_version="abc123")
    assert manifest["dim"] == -(-bits // 8) * 8 and manifest["count"] == 600  # whole bytes: 12 -> 16, 36 -> 40
    assert json.loads((tmp_path / "index" / milvus.MANIFEST).read_text()) == manifest
    assert manifest["collection"].startswith(f"t{bits}_abc123_")
    remote = milvus.load_index(tmp_path / "index")
    assert isinstance(remote, milvus.MilvusIndex)
    queries = clustered(20, bits, seed=1)
    for local_hits, remote_hits in zip(index.search(queries, 25), remote.search(queries, 25)):
        same_top_k(local_hits, remote_hits, 25)


def test_bin_ivf_flat_recall_against_exact_search(server, tmp_path):
    index = build(tmp_path / "index", 64, count=5000)
    milvus.publish(index, milvus.MilvusSettings(server, "ivf", kind="BIN_IVF_FLAT", nlist=64), "abc123")
    remote = milvus.load_index(tmp_path / "index")
    queries = clustered(50, 64, seed=2)
    found = 0
    for local_hits, remote_hits in zip(index.search(queries, 100), remote.search(queries, 100)):
        radius = local_hits[-1].distance  # as bench/search.py counts: ties at the 100th distance count
        found += sum(h.distance <= radius for h in remote_hits)
    assert found / (50 * 100) >= 0.95


def test_additions_and_removals_reach_milvus_and_survive_a_rebuild(server, tmp_path):
    folder = tmp_path / "index"
    index = build(folder, 16)
    settings = milvus.MilvusSettings(server, "grow")
    first = milvus.publish(index, settings, "v1")
    new = clustered(3, 16, seed=3)
    milvus.add_entries(folder, new, ["mine-1", "mine-2", "mine-3"], np.eye(3, dtype=np.uint8), ["store:0"] * 3)
    milvus.remove_entries(folder, ["img0005", "mine-2"])
    local = HammingIndex.load(folder)
    manifest = milvus.read_manifest(folder)
    assert manifest["count"] == len(local) == 601 and manifest["codes_md5"] == milvus.digest(local.words)
    remote = milvus.load_index(folder)
    assert remote.search(new[:1], 1)[0][0].id == "mine-1"
    hits = [h.id for hits in remote.search(np.concatenate([new, index.codes_of(np.array([5]))]), 50) for h in hits]
    assert "mine-2" not in hits and "img0005" not in hits
    # A rebuild (the index stage: the folder already holds what users added and removed) makes a new
    # collection, moves the alias to it and drops the old one.
    second = milvus.publish(local, settings, "v2")
    client = milvus.connect(server)
    assert second["collection"] != first["collection"]
    assert client.describe_alias("grow")["collection_name"] == second["collection"]
    assert first["collection"] not in client.list_collections()
    rebuilt = milvus.load_index(folder)
    for local_hits, remote_hits in zip(local.search(new, 10), rebuilt.search(new, 10)):
        same_top_k(local_hits, remote_hits, 10)
    assert rebuilt.search(new[2:3], 1)[0][0].id == "mine-3"


def test_a_server_that_is_not_there_is_a_clear_error(tmp_path):
    index = build(tmp_path / "index", 16, count=10)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(milvus.DSAHError, match=f"cannot reach Milvus at http://127.0.0.1:{port}"):
        milvus.publish(index, milvus.MilvusSettings(f"http://127.0.0.1:{port}", "x"), "v1")


@pytest.mark.integration
def test_the_index_stage_on_milvus_and_the_commands_on_it(pipeline, server, tmp_path):
    """`index.backend: milvus` through DVC: the stage fills a collection and writes its manifest, `dsah
    search` and `dsah serve` answer from it as locally, `dsah add` and `remove` reach it, and the next
    build keeps them, in a new collection under the same alias."""
    from conftest import copy_with_outputs, set_params
    from fastapi.testclient import TestClient
    from PIL import Image

    from dsah.data.loading import load_prepared

    from dsah.search.image_encoder import ImageEncoder
    from dsah.search.serve import SearchService, create_app

    repo = copy_with_outputs(pipeline, tmp_path / "repo")
    set_params(repo / "params.yaml", **{"index.backend": "milvus", "index.milvus_uri": server,
                                        "index.collection": "stage"})
    built = pipeline.dvc("repro", "index", cwd=repo).stdout
    assert "Running stage 'index'" in built and "Running stage 'train'" not in built  # only the index reruns
    manifest = milvus.read_manifest(repo / "data" / "index")
    local = HammingIndex.load(repo / "data" / "index")
    assert manifest["count"] == len(local) and manifest["codes_md5"] == milvus.digest(local.words)
    assert manifest["collection"].startswith("stage_") and "on Milvus at" in built

    def search(*args):
        answer = pipeline.run(sys.executable, "-m", "dsah.cli", "search", *args, "--json", cwd=repo).stdout
        return json.loads(answer)["queries"][0]["results"]

    entry = str(local.ids[123])
    codes = local.codes_of(np.array([123]))
    assert [r["distance"] for r in search("--id", entry, "-k", "20")] == \
        [h.distance for h in local.search(codes, 20)[0]]
    service = SearchService(milvus.load_index(repo / "data" / "index"), ImageEncoder(repo / "models" / "model.pt"))
    with TestClient(create_app(service, allowed_hosts=frozenset({"testserver"}))) as client:
        served = client.get(f"/api/search?id={entry}&k=20").json()["results"]
    assert [r["distance"] for r in served] == [h.distance for h in local.search(codes, 20)[0]]

    data = load_prepared(repo / "data" / "prepared", repo / "data" / "images")
    photo = tmp_path / "mine.png"
    Image.fromarray(np.asarray(data.store[data.query.table["store_index"][0]])).save(photo)
    pipeline.run(sys.executable, "-m", "dsah.cli", "add", str(photo), "--labels", "cat", cwd=repo)
    removed = str(local.ids[5])
    pipeline.run(sys.executable, "-m", "dsah.cli", "remove", removed, cwd=repo)
    client = milvus.connect(server)

    def held(entry):  # rows of the collection the alias names, by primary key
        return len(client.query("stage", filter=f'id == "{entry}"', output_fields=["id"], consistency_level="Strong"))

    assert (held("mine"), held(removed), held(entry)) == (1, 0, 1)
    assert milvus.read_manifest(repo / "data" / "index")["count"] == len(local)  # one in, one out

    pipeline.dvc("repro", "--force", "--single-item", "index", cwd=repo)  # this stage alone, rebuilt
    again = milvus.read_manifest(repo / "data" / "index")
    assert again["collection"] != manifest["collection"] and again["count"] == len(local)
    assert client.describe_alias("stage")["collection_name"] == again["collection"]
    assert manifest["collection"] not in client.list_collections()
    assert (held("mine"), held(removed), held(entry)) == (1, 0, 1)  # what users did survives the rebuild


def test_the_search_benchmark_on_milvus(server, tmp_path):
    """bench/search.py --milvus: the same codes on Milvus; BIN_FLAT is exact, BIN_IVF_FLAT with every list
    probed too."""
    import subprocess

    from conftest import ROOT

    out = tmp_path / "search.json"
    subprocess.run([sys.executable, "bench/search.py", "--out", str(out), "--n", "3000", "--queries", "20", "--k",
                    "10", "--nlist", "16", "--nprobe", "2", "16", "--milvus", "--milvus-uri", server],
                   check=True, capture_output=True, text=True, cwd=ROOT)
    runs = json.loads(out.read_text())["milvus"]["runs"]
    assert [(r["index"], r["nprobe"]) for r in runs] == [("BIN_FLAT", None), ("BIN_IVF_FLAT", 2), ("BIN_IVF_FLAT", 16)]
    assert runs[0]["recall@10"] == 1.0 and runs[2]["recall@10"] == 1.0 and 0 < runs[1]["recall@10"] <= 1
    assert all(r["queries_per_second"] > 0 and r["build_seconds"] > 0 for r in runs)

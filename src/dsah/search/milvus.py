"""Search past one machine: the index's codes in a Milvus collection (`index.backend: milvus`).

The index folder stays what it is (ids, labels, image references, the codes too) and gains a manifest,
milvus.json: the server, the collection that holds its codes, how many and their digest, so that DVC
tracks what the collection holds. Milvus keeps the codes as BINARY_VECTOR (whole bytes: 12- and 36-bit
codes are zero-padded, which changes no Hamming distance) with the index rows' ids as primary keys, and
answers searches with the HAMMING metric: BIN_FLAT exactly (the local kernel's distances; ids may differ
among ties, which Milvus orders its own way), BIN_IVF_FLAT approximately (nlist lists, nprobe scanned).

Each index build writes a new collection named after the alias and the model's version,
<alias>_<model md5[:12]>_<UTC time>, switches the alias (what searches name) to it once it is complete
and loaded, and drops the alias's previous collections: searches never see a half-written one.
`dsah add` and `dsah remove` insert into and delete from the collection the alias names, before the local
folder is rewritten, and searches that follow a write ask for Strong consistency. The server's address
comes from params (or the manifest); credentials only from $DSAH_MILVUS_TOKEN.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsah.errors import DataError, DSAHError
from dsah.search import index as local
from dsah.search.index import MILVUS_MANIFEST as MANIFEST, Hit, HammingIndex

TOKEN_ENV = "DSAH_MILVUS_TOKEN"  # "user:password" or an API key; never in params or the manifest
URI_ENV = "DSAH_MILVUS_URI"  # overrides the manifest's server (the same collection, reached another way)
ID_LENGTH = 1024  # the primary key's VARCHAR length: an index id is a path-like name
BATCH = 20_000  # rows per insert request (Milvus caps a request's size)
NPROBE = 32  # BIN_IVF_FLAT: lists scanned per query
INDEX_TIMEOUT = 3600.0  # seconds the server may take to index a new collection


@dataclass(frozen=True)
class MilvusSettings:
    uri: str
    alias: str
    kind: str = "BIN_FLAT"  # or BIN_IVF_FLAT
    nlist: int = 1024


def packed(codes: np.ndarray) -> np.ndarray:
    """(n, c) +-1 codes -> (n, ceil(c / 8)) bytes, bit set where the code is +1, zero-padded."""
    return np.packbits(np.asarray(codes) > 0, axis=1)


@contextlib.contextmanager
def embedded_server(base: Path):
    """A real Milvus server on this machine (the pip package `milvus`, a dev dependency: tests and
    bench/search.py), its files under `base`, on a free port; -> its URI while the block runs."""
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base))
    with socket.socket() as probe:  # a free port: another server on this machine keeps its own
        probe.bind(("127.0.0.1", 0))
        server.listen_port = probe.getsockname()[1]
    server.start()
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()


def connect(uri: str):
    """A client of the server at `uri` (pymilvus is imported here only), credentials from the environment."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise DSAHError("index.backend milvus needs pymilvus (pip install -e '.[milvus]')") from None
    try:
        return MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""))
    except Exception as error:  # pymilvus's MilvusException, or a refused connection
        raise DSAHError(f"cannot reach Milvus at {uri}: {error} (index.milvus_uri; credentials in ${TOKEN_ENV})") \
            from None


def digest(words: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(words).tobytes()).hexdigest()


def publish(index: HammingIndex, settings: MilvusSettings, model_version: str) -> dict[str, Any]:
    """Write the index's codes into a new collection, switch the alias to it, drop the alias's older ones,
    and write the manifest into the index folder; -> the manifest."""
    from pymilvus import DataType, MilvusClient

    client = connect(settings.uri)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S%f")
    name = f"{settings.alias}_{model_version[:12]}_{stamp}"
    dim = -(-index.bits // 8) * 8
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH)
    schema.add_field("code", DataType.BINARY_VECTOR, dim=dim)
    params = client.prepare_index_params()
    params.add_index(field_name="code", index_type=settings.kind, metric_type="HAMMING",
                     params={"nlist": settings.nlist} if settings.kind == "BIN_IVF_FLAT" else {})
    client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")
    try:
        ids = index.ids.tolist()
        for start in range(0, len(ids), BATCH):
            rows = np.arange(start, min(start + BATCH, len(ids)))
            codes = packed(index.codes_of(rows))
            client.insert(name, [{"id": ids[r], "code": codes[i].tobytes()} for i, r in enumerate(rows)])
        client.flush(name)  # sealed segments get the index (growing ones are scanned whole)
        _wait_for_index(client, name, len(ids))
        client.load_collection(name)
        count = _count(client, name)
        if count != len(ids):
            raise DataError(f"Milvus collection {name} holds {count} codes after the build, the index {len(ids)}")
    except Exception:
        client.drop_collection(name)
        raise
    previous = _target(client, settings.alias)
    if previous is None:
        client.create_alias(name, settings.alias)
    else:
        client.alter_alias(name, settings.alias)  # one step: searches see the old collection or the new one
    for old in client.list_collections():
        if old.startswith(f"{settings.alias}_") and old != name:
            client.drop_collection(old)
    manifest = {"uri": settings.uri, "alias": settings.alias, "collection": name, "kind": settings.kind,
                "nlist": settings.nlist, "dim": dim, "bits": index.bits, "count": len(ids),
                "codes_md5": digest(index.words), "model_version": model_version}
    write_manifest(index.folder, manifest)
    return manifest


def _wait_for_index(client, name: str, rows: int, timeout: float = INDEX_TIMEOUT) -> None:
    """Until the server has indexed every row (it builds in the background after the flush): the alias
    moves to a collection that searches as its index promises, not to one still scanned whole."""
    deadline = time.monotonic() + timeout
    while True:
        described = client.describe_index(name, "code")
        if described.get("state") == "Finished" and int(described.get("indexed_rows", 0)) >= rows:
            return
        if described.get("state") == "Failed" or time.monotonic() > deadline:
            raise DataError(f"Milvus did not finish indexing {name} within {timeout:g} s: {described}")
        time.sleep(0.5)


def _target(client, alias: str) -> str | None:
    """The collection `alias` names, or None when there is no such alias."""
    if alias not in client.list_aliases().get("aliases", []):
        return None
    return client.describe_alias(alias)["collection_name"]


def _count(client, name: str) -> int:
    result = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(result[0]["count(*)"])


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    staging = folder / f".{MANIFEST}.staging"
    staging.write_text(json.dumps(manifest, indent=2) + "\n")
    staging.replace(folder / MANIFEST)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


class MilvusIndex(HammingIndex):
    """An index whose searches run on Milvus; ids, labels and images come from the folder as locally."""

    client: Any = None
    manifest: dict[str, Any] | None = None

    @classmethod
    def attach(cls, index: HammingIndex, manifest: dict[str, Any]) -> MilvusIndex:
        attached = cls(index.folder, index.words, index.ids, index.labels, index.refs, index.meta)
        attached.manifest = manifest
        attached.client = _client(manifest)
        return attached

    def search(self, query_codes: np.ndarray, k: int = 10) -> list[list[Hit]]:
        query_codes = np.atleast_2d(query_codes)
        if query_codes.shape[1] != self.bits:
            raise DataError(f"query codes have {query_codes.shape[1]} bits, the index {self.bits}")
        params = {"metric_type": "HAMMING", **({"params": {"nprobe": NPROBE}}
                                                if self.manifest["kind"] == "BIN_IVF_FLAT" else {})}
        found = self.client.search(self.manifest["alias"], data=[c.tobytes() for c in packed(query_codes)],
                                   anns_field="code", limit=k, search_params=params, consistency_level="Strong")
        position = self.positions
        return [self.hits(np.array([position[hit["id"]] for hit in hits], dtype=np.int64),
                          np.array([int(hit["distance"]) for hit in hits], dtype=np.int64)) for hits in found]


def load_index(folder: str | Path, mmap: bool = True) -> HammingIndex:
    """The index in `folder`: searched on Milvus where its manifest says so, by the local kernel otherwise."""
    index = HammingIndex.load(folder, mmap)
    manifest = read_manifest(index.folder)
    return index if manifest is None else MilvusIndex.attach(index, manifest)


def add_entries(folder: Path, codes: np.ndarray, ids: list[str], labels: np.ndarray, refs: list[str],
                files=None) -> HammingIndex:
    """dsah.search.index.add_entries, the codes into the collection first for an index on Milvus (taken out
    again if the folder cannot be rewritten)."""
    clash = sorted(set(ids) & set(HammingIndex.load(folder).ids.tolist()))
    if clash:  # before Milvus, which keeps a second row under a primary key it already holds
        raise DataError(f"id(s) already in the index: {', '.join(clash[:5])}; remove them first or pick other ids")
    _insert(Path(folder), ids, codes)
    try:
        index = local.add_entries(folder, codes, ids, labels, refs, files)
    except Exception:
        _delete(Path(folder), ids)
        raise
    _refresh(index)
    return index


def remove_entries(folder: Path, ids: list[str]) -> HammingIndex:
    """dsah.search.index.remove_entries, out of the collection first for an index on Milvus."""
    before = HammingIndex.load(folder)
    rows = before.rows_of(ids)
    _delete(Path(folder), ids)
    try:
        index = local.remove_entries(folder, ids)
    except Exception:
        _insert(Path(folder), ids, before.codes_of(rows))
        raise
    _refresh(index)
    return index


def _insert(folder: Path, ids: Sequence[str], codes: np.ndarray) -> None:
    manifest = read_manifest(folder)
    if manifest is not None and len(ids):
        rows = packed(codes)
        _client(manifest).insert(manifest["alias"], [{"id": i, "code": rows[n].tobytes()} for n, i in enumerate(ids)])


def _delete(folder: Path, ids: Sequence[str]) -> None:
    manifest = read_manifest(folder)
    if manifest is not None and len(ids):
        _client(manifest).delete(manifest["alias"], filter=f"id in {json.dumps(list(ids))}")


def _refresh(index: HammingIndex) -> None:
    """The manifest's count and digest after the folder was rewritten."""
    manifest = read_manifest(index.folder)
    if manifest is not None:
        write_manifest(index.folder, {**manifest, "count": len(index), "codes_md5": digest(index.words)})


def _client(manifest: dict[str, Any]):
    return connect(os.environ.get(URI_ENV) or manifest["uri"])

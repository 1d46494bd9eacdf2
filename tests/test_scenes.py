"""The cifar10-scenes stand-in: objects of long-tailed classes on a grid with empty places, built from
CIFAR-10 pixels without leaking a query's pixels into the database; a random ranking scores low on it,
and its Great Expectations suite checks what it states."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_cifar_jpg_archive

from dsah.config import load_params
from dsah.errors import ConfigError
from dsah.data.cifar10 import prepare_cifar10, read_cifar10
from dsah.data.coco import locate_coco, prepare_coco
from dsah.data.mosaic import store_images
from dsah.data.table import EMPTY
from dsah.data.nuswide import locate_nuswide, prepare_nuswide
from dsah.data.params import ScenesSource
from dsah.data.protocols import CIFAR10_CLASSES, LABEL_TABLE_CHANCE, PROTOCOLS, Protocol, scenes_protocol
from dsah.data.scenes import class_weights, prepare_scenes
from dsah.data.sources import Source
from dsah.data.validation import validate_prepared
from dsah.evaluation.metrics import chance_map

ROOT = Path(__file__).resolve().parents[1]
SMALL = Protocol("small-cifar", rows=200, queries=50, label_width=10, queries_per_class=5)


def committed() -> ScenesSource:
    """The committed setting (params.yaml): what every test here builds, unless it says otherwise."""
    return load_params(ROOT / "params.yaml").section("prepare.cifar10-scenes", ScenesSource)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return make_cifar_jpg_archive(tmp_path_factory.mktemp("scenes") / "c.tar.gz", 15, 5)


def build(archive: Path, queries: int = 40, database: int = 400, **changes):
    own = committed()
    objects, zipf = changes.get("objects", own.objects), changes.get("zipf", own.zipf)
    return prepare_scenes(scenes_protocol(queries, database), Source(archive, "params"), 0, own.grid, objects,
                          zipf, cifar_protocol=SMALL)


def test_scenes_show_their_labels_and_keep_query_pixels_out_of_the_database(archive):
    prepared = build(archive)
    cifar = prepare_cifar10(SMALL, Source(archive, "params"), split_seed=0)
    cifar_query = {i for i, q in zip(cifar.ids, cifar.query) if q}
    class_of = dict(zip(cifar.ids, cifar.labels.argmax(axis=1)))
    assert len(set(prepared.image_refs)) == len(prepared.image_refs) and prepared.protocol.stand_in
    for ref, labels, is_query in zip(prepared.image_refs, prepared.labels, prepared.query):
        tokens = ref.split("|")
        objects = [t for t in tokens if not t.startswith(EMPTY)]
        assert len(tokens) == 4 and 1 <= len(objects) == len(set(objects))
        assert all((t in cifar_query) == is_query for t in objects)
        assert set(np.flatnonzero(labels)) == {class_of[t] for t in objects}
    # The store: an object's place shows its image, an empty place its colour.
    pixels = read_cifar10(archive)
    ref = next(ref for ref in prepared.image_refs if ref.startswith(EMPTY) and not ref.split("|")[1].startswith(EMPTY))
    first, second = ref.split("|")[:2]
    scene = dict(store_images(archive, [ref], 64, grid=2))[0]
    assert scene.shape == (64, 64, 3)
    colour = np.frombuffer(bytes.fromhex(first[1:]), np.uint8)
    assert np.array_equal(scene[:32, :32], np.broadcast_to(colour, (32, 32, 3)))
    assert np.array_equal(scene[:32, 32:], pixels.images[pixels.ids.index(second)])


def test_committed_setting_is_long_tailed_with_at_most_two_labels_and_chance_map_at_most_a_half(archive):
    prepared = build(archive, queries=100, database=1000)
    labels, query = prepared.labels.astype(np.float32), prepared.query
    frequency = labels[~query].mean(axis=0)
    assert labels.sum(axis=1).mean() <= 2.0 and frequency[0] > 3 * frequency[-1]
    chance = chance_map(labels[query], labels[~query])
    assert chance <= 0.5
    # The old mosaic's uniform classes and four objects per image: far higher (0.80 at full size).
    crowded = build(archive, queries=100, database=1000, objects=[0, 0, 0, 1], zipf=0.0)
    assert chance_map(crowded.labels[crowded.query], crowded.labels[~crowded.query]) > 0.7
    assert class_weights(0.0).tolist() == pytest.approx([0.1] * 10)


def test_settings_that_cannot_make_a_scene_are_refused():
    own = committed()
    with pytest.raises(ConfigError, match="objects.*summing to 1"):
        ScenesSource(archive="", queries=1, database=1, grid=2, objects=[0.5, 0.4], zipf=1.0)
    with pytest.raises(ConfigError, match="at most grid x grid = 4"):
        ScenesSource(archive="", queries=1, database=1, grid=2, objects=[0.5, 0.1, 0.1, 0.1, 0.2], zipf=1.0)
    assert sum(own.objects) == pytest.approx(1.0)


@pytest.fixture
def context(tmp_path) -> Path:
    shutil.copytree(ROOT / "gx", tmp_path / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    return tmp_path / "gx"


def suite_run(prepared, context: Path):
    table = prepared.table(40, 0)
    store = np.zeros((len(table), 64, 64, 3), np.uint8)
    parameters = {"validation_size": 40, "queries": int(prepared.query.sum()), "rows": len(table), "image_px": 64,
                  "places": 4}
    return validate_prepared(table, list(CIFAR10_CLASSES), store, "cifar10-scenes", parameters, context)


def test_the_suite_passes_a_built_split_and_fails_what_the_stand_in_must_not_be(archive, context):
    result = suite_run(build(archive), context)
    assert result.success, result.summary()
    assert {"labels_mean", "head_class", "tail_class", "tile_sources_disjoint", "classes_per_scene"} <= \
        {c["name"] for c in result.checks}
    # Four objects of uniformly frequent classes: more than 2 labels on average, and no long tail.
    crowded = suite_run(build(archive, objects=[0, 0, 0, 1], zipf=0.0), context)
    assert {c["name"] for c in crowded.failures()} == {"labels_mean", "head_class", "tail_class"}
    # A database scene showing a query image: the pixels leak.
    leaking = build(archive)
    query_object = next(t for t in leaking.image_refs[0].split("|") if not t.startswith(EMPTY))
    row = int(np.flatnonzero(~leaking.query)[0])
    tokens = leaking.image_refs[row].split("|")
    leaking.image_refs[row] = "|".join([query_object, *tokens[1:]])
    assert {c["name"] for c in suite_run(leaking, context).failures()} == {"tile_sources_disjoint"}


@pytest.mark.parametrize("protocol", sorted(LABEL_TABLE_CHANCE))
def test_label_tables_chance_map_is_what_the_protocols_state(shared_data, protocol):
    if protocol == "coco":
        found = locate_coco(str(shared_data / "coco-hashing-labels.tsv.gz"), "", download=False)
        prepared = prepare_coco(PROTOCOLS["coco"], found["labels"], None, split_seed=0)
    else:
        found = locate_nuswide(str(shared_data / "nuswide21-hashing-labels.tsv.gz"), "")
        prepared = prepare_nuswide(found["labels"], None, split_seed=0)
    assert prepared.protocol.name == protocol
    labels = prepared.labels.astype(np.float32)
    assert chance_map(labels[prepared.query], labels[~prepared.query]) == pytest.approx(
        LABEL_TABLE_CHANCE[protocol], abs=5e-5)

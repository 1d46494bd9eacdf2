"""Search for users on the shared pipeline run: the index stage, `dsah search` by id and by image,
adding and removing images, and the local web page and JSON API (in headless Chromium)."""

import json
import shutil
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from dsah.search.additions import read_store
from dsah.data.loading import load_prepared
from dsah.codes import load_codes
from dsah.search.image_encoder import ImageEncoder
from dsah.search.index import HammingIndex
from dsah.evaluation.metrics import hamming_distances

pytestmark = pytest.mark.integration


def dsah(pipeline, *args, check=True):
    return pipeline.run(sys.executable, "-m", "dsah.cli", *args, check=check)


@pytest.fixture(scope="module")
def query_image(pipeline, tmp_path_factory):
    """The first query image as a lossless PNG file, and its id."""
    data = load_prepared(pipeline.path / "data" / "prepared", pipeline.path / "data" / "images")
    path = tmp_path_factory.mktemp("query") / "query.png"
    Image.fromarray(np.asarray(data.store[data.query.table["store_index"][0]])).save(path)
    return path, data.query.ids[0]


def test_index_holds_the_database_codes_and_ranks_as_the_evaluation_does(pipeline):
    index = HammingIndex.load(pipeline.path / "data" / "index")
    ids, codes = load_codes(pipeline.path / "data" / "codes" / "database.npz")
    assert index.ids.tolist() == ids and np.array_equal(index.codes_of(np.arange(len(ids))), codes)
    assert index.meta["method"] == "dsah" and index.meta["bits"] == 12 and len(index.classes) == 10
    _, queries = load_codes(pipeline.path / "data" / "codes" / "query.npz")
    hits = index.search(queries[:3], k=50)
    distances = hamming_distances(queries[:3], codes)
    for a in range(3):
        ranking = np.lexsort((np.arange(len(codes)), distances[a]))[:50]  # the evaluation's tie rule
        assert [h.row for h in hits[a]] == ranking.tolist()


def test_search_by_id_and_by_image_from_the_command_line(pipeline, query_image):
    index = HammingIndex.load(pipeline.path / "data" / "index")
    entry = str(index.ids[123])
    by_id = json.loads(dsah(pipeline, "search", "--id", entry, "-k", "5", "--json").stdout)
    results = by_id["queries"][0]["results"]
    # Learned codes of one class coincide: the entry's twins come first, by database order.
    assert by_id["queries"][0]["query"] == f"id:{entry}" and results[0]["distance"] == 0
    assert [r["row"] for r in results] == [h.row for h in index.search(index.codes_of(np.array([123])), k=5)[0]]
    assert results[0]["image"].startswith("store:") and results[0]["labels"] == index.label_names(123)

    path, query_id = query_image
    by_image = json.loads(dsah(pipeline, "search", str(path), "-k", "8", "--json").stdout)["queries"][0]["results"]
    # The network encodes the PNG exactly as the encode stage encoded that query.
    query_ids, query_codes = load_codes(pipeline.path / "data" / "codes" / "query.npz")
    expected = index.search(query_codes[query_ids.index(query_id)], k=8)[0]
    assert [(r["id"], r["distance"]) for r in by_image] == [(h.id, h.distance) for h in expected]
    text = dsah(pipeline, "search", str(path), "-k", "3").stdout
    assert text.startswith(f"{path}: top 3 of 59000 (12 bits)") and "d=" in text

    missing = dsah(pipeline, "search", "/nonexistent.png", check=False)
    assert missing.returncode == 2 and "/nonexistent.png: no such image file" in missing.stderr
    unknown = dsah(pipeline, "search", "--id", "no-such-id", check=False)
    assert unknown.returncode == 2 and "unknown id(s)" in unknown.stderr


def test_added_images_are_found_and_removed_ones_are_gone(pipeline, query_image, tmp_path):
    path, _ = query_image
    index_copy, store = tmp_path / "index", tmp_path / "additions"  # the shared run's own stay as they are
    shutil.copytree(pipeline.path / "data" / "index", index_copy)
    out = dsah(pipeline, "add", "--index", str(index_copy), "--additions", str(store), str(path), "--ids", "my-photo",
               "--labels", "cat").stdout
    assert "the index holds 59001" in out and f"{store} is outside any DVC project: nothing versions it" in out
    hits = json.loads(dsah(pipeline, "search", "--index", str(index_copy), str(path), "-k", "59001",
                           "--json").stdout)["queries"][0]["results"]
    mine = next(h for h in hits if h["id"] == "my-photo")
    assert mine["distance"] == 0 and mine["labels"] == ["cat"] and mine["image"].startswith("added/")
    assert (index_copy / mine["image"]).read_bytes() == path.read_bytes()
    assert [(a.id, a.labels) for a in read_store(store).added] == [("my-photo", ("cat",))]  # kept beside the index
    again = dsah(pipeline, "add", "--index", str(index_copy), "--additions", str(store), str(path), "--ids", "my-photo",
                 check=False)
    assert again.returncode == 2 and "already in the index: my-photo" in again.stderr
    assert [p.name for p in (index_copy / "added").iterdir()] == [mine["image"][len("added/"):]]  # no orphan copy
    bad_label = dsah(pipeline, "add", "--index", str(index_copy), "--additions", str(store), str(path),
                     "--labels", "unicorn", check=False)
    assert bad_label.returncode == 2 and "unknown label(s) unicorn" in bad_label.stderr
    assert len(read_store(store).added) == 1  # refused before anything was written
    removed = dsah(pipeline, "remove", "--index", str(index_copy), "--additions", str(store), "my-photo").stdout
    assert "the index holds 59000" in removed and "1 added image(s) deleted" in removed
    assert "my-photo" not in HammingIndex.load(index_copy).ids.tolist()
    assert not (index_copy / mine["image"]).exists()
    assert read_store(store).added == () and read_store(store).removed == () and not list((store / "images").iterdir())


@pytest.fixture(scope="module")
def server(pipeline):
    from dsah.search.serve import SearchService, make_server

    index = HammingIndex.load(pipeline.path / "data" / "index")
    service = SearchService(index, ImageEncoder(pipeline.path / "models" / "model.pt"), max_upload=200_000)
    httpd = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def request(url, data=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data is not None
                                                           else "GET"), timeout=60) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read()


def test_json_api_answers_and_refuses_bad_input_clearly(server, query_image):
    path, _ = query_image
    status, kind, body = request(f"{server}/api/search?k=5", path.read_bytes())
    payload = json.loads(body)
    assert status == 200 and kind == "application/json" and len(payload["results"]) == 5
    status, kind, body = request(f"{server}{payload['results'][0]['thumbnail']}")
    assert status == 200 and kind == "image/png" and body.startswith(b"\x89PNG")
    cases = [
        (request(f"{server}/api/search", b"this is not an image"), 400, "not a decodable image"),
        (request(f"{server}/api/search", b"x" * 200_001), 413, "over the limit of 200000 bytes"),
        (request(f"{server}/api/search?k=0", path.read_bytes()), 400, "k must be between 1 and 100"),
        (request(f"{server}/api/search?k=-5", path.read_bytes()), 400, "k must be between 1 and 100"),
        (request(f"{server}/api/samples?n=-5"), 400, "n must be between 1 and 100"),
        (request(f"{server}/api/samples?n=many"), 400, "n must be an integer"),
        (request(f"{server}/api/search?id=nope"), 404, "unknown id(s)"),
        (request(f"{server}/image/99999999"), 404, "no such image"),
        (request(f"{server}/image/..%2F..%2Fetc%2Fpasswd"), 404, "no such page"),
        (request(f"{server}/../../etc/passwd"), 404, "no such page"),
    ]
    for (status, kind, body), expected_status, message in cases:
        assert status == expected_status and kind == "application/json", (status, body[:100])
        assert message in json.loads(body)["error"], body


def test_page_uploads_a_query_and_shows_the_results_with_their_images(server, query_image, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        browser.get(server + "/")
        assert browser.title == "DSAH image search"
        WebDriverWait(browser, 30).until(lambda b: len(b.find_elements("css selector", "#samples figure")) == 12)
        browser.find_element("id", "file").send_keys(str(query_image[0]))
        WebDriverWait(browser, 60).until(lambda b: len(b.find_elements("css selector", "#results figure")) == 20)
        captions = [f.text for f in browser.find_elements("css selector", "#results figcaption")]
        assert captions[0].startswith("#1 d=") and all(" d=" in c for c in captions)
        loaded = "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
        WebDriverWait(browser, 30).until(lambda b: b.execute_script(loaded))
        browser.find_elements("css selector", "#samples figure")[3].click()  # pick a database image instead
        WebDriverWait(browser, 60).until(
            lambda b: b.find_element("id", "results").get_attribute("data-query").startswith("id:"))
        first = browser.find_element("css selector", "#results figcaption").text
        assert first.startswith("#1 d=0 ")
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        browser.quit()

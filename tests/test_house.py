"""The house keeps its shape: no module over 400 lines, no import cycle, every import between rooms
pointing down the layers (tools/house.py), and the picture in docs/pipeline.md drawn from the code."""

from conftest import ROOT, load_script


house = load_script(ROOT / "tools" / "house.py", "house")
GRAPH = house.module_graph()


def test_no_module_in_src_stages_or_flows_is_over_400_lines():
    assert house.too_long() == []


def test_the_longest_file_would_be_named(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "src" / "dsah").mkdir(parents=True)
    (tmp_path / "stages" / "long.py").write_text("x = 1\n" * 401)
    assert house.too_long(tmp_path) == ["stages/long.py: 401 lines"]


def test_no_import_cycle():
    assert house.cycles(GRAPH) == []


def test_every_import_between_rooms_points_down_the_layers():
    assert house.layering_problems(GRAPH) == []


def test_a_cycle_and_an_import_back_up_are_found_and_named():
    errors, config = ROOT / "src/dsah/errors.py", ROOT / "src/dsah/config.py"  # config imports errors
    graph = {**GRAPH, errors: GRAPH[errors] | {config}}
    assert sorted([errors, config]) in house.cycles(graph)
    assert house.layering_problems(graph) == ["errors -> config runs back up (1: dsah.errors -> dsah.config)"]


def test_the_library_has_rooms_not_a_flat_folder():
    rooms = {house.room_of(p) for p in GRAPH}
    assert {"data", "nets", "methods", "training", "evaluation", "search", "experiments"} <= rooms
    assert (ROOT / "src/dsah/methods/dsah.py").is_file()  # DSAH's loss, in a file named after it


def test_the_picture_in_the_docs_is_drawn_from_todays_code():
    page = house.PICTURE_PAGE.read_text()
    assert house.with_picture(page, GRAPH) == page, "docs/pipeline.md's picture of the house is stale: run `make house`"

"""The HTML report of the shared pipeline run, opened in a real headless browser (Debian's chromium)."""

import pytest
from conftest import chromium
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


def test_report_renders_with_every_image_and_no_console_error(pipeline, browser, tmp_path):
    report = pipeline.path / "reports" / "report.html"
    browser.get(report.as_uri())
    assert browser.title.startswith("DSAH report: dsah on cifar10, 12 bits")
    headings = [h.text for h in browser.find_elements("tag name", "h2")]
    assert headings == ["Metrics", "Curves", "Bit correlation (database codes)", "Retrieval gallery", "Parameters"]
    widths = browser.execute_script("return [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    # heatmap + 5 gallery rows of a query and its 10 results
    assert len(widths) == 1 + 5 * 11 and all(w > 0 for w in widths)
    assert len(browser.find_elements("css selector", "svg polyline")) == 4  # PR, P@K, loss, validation mAP
    assert "paper's DSAH at 12 bits" in browser.find_element("tag name", "table").text
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_markdown_report_links_existing_figures(pipeline):
    reports = pipeline.path / "reports"
    md = (reports / "report.md").read_text()
    assert md.startswith("# DSAH report: dsah on cifar10, 12 bits")
    for target in ("figures/pr_curve.svg", "figures/precision_at_k.svg", "figures/gallery.png",
                   "plots/bit_correlation.png"):
        assert f"]({target})" in md and (reports / target).stat().st_size > 0


def test_data_docs_linked_from_the_report_show_the_suite_and_its_results(pipeline, browser):
    browser.get((pipeline.path / "reports" / "report.html").as_uri())
    assert "30 of 30 checks of the cifar10 suite passed" in browser.find_element("tag name", "body").text
    browser.find_element("link text", "Data Docs").click()  # latest.html, forwarding to the run's page
    # The forward changes the URL before the new page has a body: wait for the loaded document.
    WebDriverWait(browser, 30).until(
        lambda b: "/validations/" in b.current_url
        and b.execute_script("return document.readyState === 'complete' && document.body !== null"))
    assert "/reports/data_docs/validations/cifar10/" in browser.current_url
    text = browser.find_element("tag name", "body").text
    # The stored suite's expectations, by their descriptions, each with its result.
    for expected in ("cifar10", "rows, queries and database", "queries showing airplane", "one class per image",
                     "no query in the validation slice, which is drawn from the database only"):
        assert expected in text
    assert "60000" in text and "0% unexpected" in text
    assert "Succeeded" in text or "succeeded" in text.lower()

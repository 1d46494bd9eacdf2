"""`dvc plots show`: exactly the plots dvc.yaml declares, and a page that draws them with no network
(.dvc/plots/offline.html carries vega inline; DVC's own page loads it from a CDN)."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, chromium
from dvc_render.vega import VegaRenderer
from selenium.webdriver.support.ui import WebDriverWait

TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"
# No host name resolves: the browser reaches nothing on the network (file: pages still open).
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"


def inlined_scripts(page: str) -> dict[str, tuple[str, str]]:
    """package@version -> (recorded sha256, the script's text) of the template's inline scripts."""
    blocks = re.findall(r'<script data-package="([^"]+)" data-sha256="([0-9a-f]{64})">\n(.*?)\n</script>', page,
                        re.DOTALL)
    return {package: (digest, text) for package, digest, text in blocks}


def test_the_template_inlines_the_vega_builds_dvc_render_asks_for():
    page = TEMPLATE.read_text(encoding="utf-8")
    scripts = inlined_scripts(page)
    # dvc-render's default page names its versions in CDN tags; a dvc-render upgrade that asks for others
    # fails here (rebuild with .dvc/plots/vega/build.py).
    assert set(scripts) == set(re.findall(r"cdn\.jsdelivr\.net/npm/([\w-]+@[\d.]+)", VegaRenderer.SCRIPTS))
    for package, (digest, text) in scripts.items():
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == digest, package
        assert (TEMPLATE.parent / "vega" / f"LICENSE-{package.split('@')[0]}").is_file()
    # dvc-render fills {plot_divs}; without {scripts} its CDN tags stay out of the page.
    assert "{plot_divs}" in page and "{scripts}" not in page and not re.search(r"<script[^>]*\ssrc=", page)
    configured = subprocess.run([sys.executable, "-m", "dvc", "config", "plots.html_template"], cwd=ROOT,
                                check=True, capture_output=True, text=True).stdout.strip()
    assert (ROOT / ".dvc" / configured).resolve() == TEMPLATE.resolve()  # relative to .dvc/


def declared_plots(repo: Path) -> set[str]:
    """dvc.yaml's top-level plots as `dvc plots show` names them: a folder stands for a plot per file."""
    names = set()
    for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]:
        name, properties = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
        path = repo / name
        if "y" not in properties and path.is_dir():
            names |= {p.relative_to(repo).as_posix() for p in path.rglob("*") if p.is_file()}
        else:
            names.add(name)
    return names


@pytest.mark.integration
def test_plots_show_lists_exactly_the_declared_plots(pipeline, tmp_path):
    shown = json.loads(pipeline.dvc("plots", "show", "--json", "--out", str(tmp_path)).stdout)
    assert "errors" not in shown
    declared = declared_plots(pipeline.path)
    assert set(shown["data"]) == declared  # no stage plot beside them, no default plot of a stray file
    loss = "reports/live/plots/metrics/loss/"
    assert {f"{loss}{term}.tsv" for term in ("total", "pairwise", "quantization")} <= declared
    assert "reports/live/plots/metrics/val/mAP.tsv" in declared
    assert {"reports/plots/pr_curve.csv", "reports/plots/precision_at_k.csv", "reports/plots/bit_correlation.png"} <= declared


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium"), OFFLINE)
    yield driver
    driver.quit()


def rgb(color: str) -> list[int]:
    return [int(color[i:i + 2], 16) for i in (1, 3, 5)]


@pytest.mark.integration
def test_the_plots_page_draws_every_plot_with_the_network_off(pipeline, offline_browser, tmp_path):
    browser = offline_browser
    # The browser is offline: the CDN script DVC's own page loads cannot be fetched.
    browser.get("data:text/html,<script src='https://cdn.jsdelivr.net/npm/vega@5.20.2'></script>")
    assert browser.execute_script("return typeof vega") == "undefined"
    browser.get_log("browser")  # (reading the log clears it)

    shown = json.loads(pipeline.dvc("plots", "show", "--json", "--out", str(tmp_path / "json")).stdout)["data"]
    vega = {name: renderers[0]["content"] for name, renderers in shown.items() if renderers[0]["type"] == "vega"}
    images = set(shown) - set(vega)
    pipeline.dvc("plots", "show", "--out", str(tmp_path / "page"))
    browser.get((tmp_path / "page" / "index.html").as_uri())
    WebDriverWait(browser, 60).until(
        lambda b: len(b.find_elements("css selector", ".vega-embed canvas")) == len(vega))
    # Each canvas holds its line: pixels of the run's colour (DVC colours a revision's series).
    colours = {spec["encoding"]["color"]["scale"]["range"][0] for spec in vega.values()}
    assert len(colours) == 1
    r, g, b = rgb(colours.pop())
    counts = browser.execute_script(f"""return [...document.querySelectorAll('.vega-embed canvas')].map(c => {{
        const p = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < p.length; i += 4)
            if (p[i + 3] > 200 && Math.abs(p[i] - {r}) < 30 && Math.abs(p[i + 1] - {g}) < 30
                && Math.abs(p[i + 2] - {b}) < 30) n++;
        return n; }})""")
    assert len(counts) == len(vega) and min(counts) > 20, counts
    widths = browser.execute_script("return [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == len(images) == 1 and all(w > 0 for w in widths)
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []

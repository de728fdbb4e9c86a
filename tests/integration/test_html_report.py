"""The offline HTML report, loaded in a real headless Chromium.

The session's real hunt on ``tiny_keras`` with the fault plugin (``fault_hunt``) seeds a copy of
its store; two more findings are written beside its finding (with lower and higher flip rates) so
that sorting the findings table has something to order. The report reads the store's cache and
starts no worker. Chromium takes a screenshot of the page and dumps its DOM after a script clicked
a column header; both run with networking disabled, so a page that needed a CDN would show it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fuzzconv.campaign import bucket_of
from fuzzconv.errors import UsageError
from fuzzconv.report.html import flip_rates, write_html
from fuzzconv.report.html.study_section import render
from fuzzconv.store import Store
from fuzzconv.study.document import Bullets, Heading, Paragraph, Table, code, strong, text
from fuzzconv.study.document import Image as Picture
from fuzzconv.workers import Worker

from ..conftest import FaultHunt, needs

ASSETS = Path(__file__).resolve().parents[1] / "assets"
FAULT = ASSETS / "fault_plugin.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install -y chromium)")

pytestmark = needs("tf", "ort")


@pytest.fixture(scope="module")
def report(fault_hunt: FaultHunt, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, Path, list[dict[str, Any]]]:
    """(store, the report, the findings) after the shared hunt and two added findings."""
    store = fault_hunt.copy(tmp_path_factory.mktemp("report") / "store")
    found = fault_hunt.output["findings"]
    assert len(found) == 1 and found[0]["flip_rate"] == fault_hunt.flip_rate(), found
    rate = found[0]["flip_rate"]
    with Store(store) as db:
        for extra in (rate / 4, (1 + rate) / 2):  # one below the hunt's finding, one above
            f = {**found[0], "flip_rate": extra, "signature": f"added:{extra}"}
            f["id"] = "F-" + hashlib.sha256(f["signature"].encode()).hexdigest()[:8]
            db.upsert_finding(f, f["campaign"], bucket_of(f))
        finds = db.findings()
    with pytest.MonkeyPatch.context() as mp:
        # It reads the cache: no framework runs, so no worker may start.
        mp.setattr(Worker, "start", lambda self: pytest.fail("the report started a worker"))
        out = write_html(store, store / "report" / "index.html", None, plugins=[FAULT])
    return store, out, finds


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                           *args], capture_output=True, text=True, timeout=120)


def test_page_is_self_contained(report: tuple[Path, Path, list[dict[str, Any]]],
                                fault_hunt: FaultHunt) -> None:
    _, out, finds = report
    page = out.read_text()
    # Nothing to fetch: no external scripts, styles or images, no protocol-relative URLs.
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert page.count('<table id="findings" class="sortable">') == 1
    for f in finds:
        assert f'id="{f["id"]}"' in page
    assert page.count("data:image/png;base64,") >= len(finds)  # failing-image thumbnails
    assert page.count('<svg class="chart"') >= 4  # node errors, two flip-rate charts, timing
    assert "fault.perturb: strength=0.5" in page
    assert f"{fault_hunt.finding['flip_rate']:.1%}" in page


def test_failing_images_show_both_top5(report: tuple[Path, Path, list[dict[str, Any]]]
                                            ) -> None:
    _, out, _ = report
    page = out.read_text()
    # The failing image flips: the reference's top-1 is not the minimal pipeline's.
    first = re.search(r"<tr class=\"changed\"><td>1</td><td>(\d+) \(([\d.]+)\)</td>"
                      r"<td>(\d+) \(([\d.]+)\)</td></tr>", page)
    assert first is not None and first[1] != first[3]


@needs_chromium
def test_chromium_renders_it(report: tuple[Path, Path, list[dict[str, Any]]],
                             tmp_path: Path) -> None:
    _, out, _ = report
    png = tmp_path / "shot.png"
    r = chromium(f"--screenshot={png}", "--window-size=1280,2000", out.as_uri(),
                 profile=tmp_path / "profile")
    assert png.is_file(), r.stderr[-2000:]
    with Image.open(png) as img:
        assert img.size == (1280, 2000)
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
    ink = (pixels.mean(axis=2) < 200).mean()  # text, bars, thumbnails
    assert 0.01 < ink < 0.6, ink
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # colour: charts, photos

    dom = chromium("--dump-dom", out.as_uri(), profile=tmp_path / "profile").stdout
    assert '<table id="findings" class="sortable">' in dom
    assert dom.count("<svg") >= 4 and dom.count("<rect") > 10
    assert dom.count('src="data:image/png;base64,') >= 3


@needs_chromium
def test_clicking_a_header_sorts_the_findings(report: tuple[Path, Path, list[dict[str, Any]]],
                                              tmp_path: Path) -> None:
    _, out, finds = report
    # The page's own script, then one that clicks "flip rate" twice and records the orders.
    probe = """<script>
      var table = document.getElementById("findings");
      var th = Array.prototype.find.call(table.tHead.rows[0].cells,
                                         function (c) { return c.textContent === "flip rate"; });
      function ids() {
        return Array.prototype.map.call(table.tBodies[0].rows,
                                        function (r) { return r.cells[0].textContent; }).join(",");
      }
      th.click(); document.body.setAttribute("data-asc", ids());
      th.click(); document.body.setAttribute("data-desc", ids());
    </script></body>"""
    page = tmp_path / "probe.html"
    page.write_text(out.read_text().replace("</body>", probe))
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    by_rate = [f["id"] for f in sorted(finds, key=lambda f: f["flip_rate"])]
    orders = dict(re.findall(r'data-(asc|desc)="([^"]*)"', dom))
    assert orders == {"asc": ",".join(by_rate), "desc": ",".join(by_rate[::-1])}, dom[-3000:]


def test_flip_rates_average_the_evaluations_containing_each_option() -> None:
    def ev(steps: list[tuple[str, dict]], fr: float | None) -> dict[str, Any]:
        return {"pipeline": {"steps": [{"step": s, "params": p} for s, p in steps],
                             "runtime": {"name": "ort", "params": {"threads": 0}}},
                "outcome": {"comparison": None if fr is None else {"flip_rate": fr}}}

    by_step, by_param = flip_rates([
        ev([("a", {"x": 1})], 0.5), ev([("a", {"x": 2})], 0.1), ev([("b", {})], 0.0),
        ev([("a", {"x": 1})], None)])
    assert by_step["a"] == (pytest.approx(0.3), 2, 1)
    assert by_step["ort"] == (pytest.approx(0.2), 3, 1)
    assert by_param["a: x=1"] == (0.5, 1, 1) and by_param["a: x=2"] == (0.1, 1, 0)


def test_study_blocks_become_tables_and_inline_plots(tmp_path: Path) -> None:
    Image.new("RGB", (4, 3), "red").save(tmp_path / "plot.png")
    html = render([Heading(1, text("Study")),
                   Paragraph(text("Some ", code("code"), " and ", strong("bold"), " <b>.")),
                   Table((text("a"), text("b")), ((text("1"), text("2")),)),
                   Bullets((text("one"), text("two"))),
                   Picture("plot", "plot.png"), Picture("gone", "../outside.png")], tmp_path)
    assert "<h3>Study</h3>" in html and "<code>code</code>" in html
    assert "<strong>bold</strong> &lt;b&gt;." in html
    assert "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert 'src="data:image/png;base64,' in html and "../outside.png not found" in html


def test_bad_outputs_are_usage_errors(report: tuple[Path, Path, list[dict[str, Any]]],
                                      tmp_path: Path) -> None:
    store, _, _ = report
    with pytest.raises(UsageError, match="is a directory"):
        write_html(store, tmp_path, None, top5=False)
    with pytest.raises(UsageError, match="no study.json"):
        write_html(store, tmp_path / "r.html", None, study=tmp_path, top5=False)
    with pytest.raises(UsageError, match="no campaign"):
        write_html(store, tmp_path / "r.html", "C-nope", top5=False)

"""The offline HTML report: ``fuzzconv report --html FILE [--campaign C] [--study DIR]``.

One static page that opens anywhere without a network: CSS and the table-sorting script are
inline, charts are inline SVG generated here, images are base64 PNGs. It shows, per campaign,

- a summary (model, seed, status, duration, evaluations by phase and symptom, cache use, versions);
- the findings table, sortable by clicking a column header;
- per finding: the pipeline and culprit, its failing images (thumbnails) with the reference's and
  the minimal pipeline's top-5, and the per-node error along the path when the finding has
  ``node_errors``;
- the mean flip rate of the evaluations that contain each step, and each step parameter value;
- where the time went: convert, compile, load and infer seconds of the slowest evaluations.

It reads the store and runs nothing: top-5 come from the outputs the hunt left in the store's
cache (:mod:`.outputs`), so no framework and no worker starts; a pipeline whose outputs are not
there (a cleared cache, a plugin step without ``--plugin``) has its images shown without top-5,
saying why.

With ``--study DIR`` (the output of ``fuzzconv study``) the study's report is included: the blocks
``study.md`` is made from (:func:`fuzzconv.study.report.study_report`), rendered as HTML with its
PNG plots inlined (:mod:`.study_section`).

Modules: :mod:`.page` (the document, its CSS and script), :mod:`.sections` (campaigns and
findings), :mod:`.charts` (SVG), :mod:`.outputs` (cached logits), :mod:`.study_section`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ...errors import UsageError
from ...store import Store
from .charts import flip_rates
from .outputs import CachedOutputs
from .page import page
from .sections import campaign as campaign_section
from .sections import header
from .study_section import study_section

__all__ = ["write_html", "flip_rates"]


def write_html(store: Path, out_file: Path, campaign: str | None = None,
               study: Path | None = None, plugins: Sequence[Path] = (), *,
               top5: bool = True, say: Callable[[str], None] = lambda s: None) -> Path:
    """Write the report of ``store`` (one campaign, or all) to ``out_file``.

    Args:
        store: the store directory.
        out_file: the HTML file to write (its directory is created).
        campaign: a campaign ID or unique prefix; None reports every campaign.
        study: a ``fuzzconv study`` output directory (with ``study.json``) to include.
        plugins: plugin files the findings' pipelines use (for their top-5).
        top5: show each failing image's top-5 from the cached outputs. Defaults to True.
        say: progress messages.

    Returns:
        The file written.
    """
    out_file = Path(out_file).expanduser()
    if out_file.is_dir():
        raise UsageError(f"report output {out_file} is a directory; give a file name")
    if study is not None and not (Path(study) / "study.json").is_file():
        raise UsageError(f"no study.json in {study} (run fuzzconv study --out {study} first)")
    if not (Path(store) / "fuzzconv.sqlite").exists():
        raise UsageError(f"no fuzzconv store in {store} (run a hunt first, or pass --store)")
    with Store(store) as db:
        ids = [db.campaign(campaign)["id"]] if campaign else [c["id"] for c in db.campaigns()]
        camps = [db.campaign(cid) for cid in ids]
        evals = {cid: list(db.evaluations(cid)) for cid in ids}
        finds = {cid: db.findings(campaign=cid) for cid in ids}
    outputs = CachedOutputs(Path(store), plugins) if top5 else None
    parts = [header(Path(store), camps, finds)]
    for camp in camps:
        say(f"campaign {camp['id']}")
        parts.append(campaign_section(camp, evals[camp["id"]], finds[camp["id"]], outputs))
    if study is not None:
        parts.append(study_section(Path(study)))
    try:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(page(parts), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out_file}: {exc.strerror or exc}") from None
    return out_file

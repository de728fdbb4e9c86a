"""``fuzzconv reports``, ``campaigns``, ``show``, ``shrink``, ``repro``, ``bundle`` and ``report``: what the store holds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from ..errors import UsageError
from ..tables import Col, Rows, op_text, pipeline_text, print_table
from .base import (KEY_VALUE, JsonOpt, PluginOpt, Status, StoreOpt, WideOpt,
                   app, console, out, print_json)


# -- findings -------------------------------------------------------------------------------------
def _open_store(store: Path) -> Any:
    from ..store import Store

    if not (Path(store) / "fuzzconv.sqlite").exists():
        raise UsageError(f"no fuzzconv store in {store} (run a hunt first, or pass --store)")
    return Store(store)


@app.command()
def reports(
    *,
    model: Annotated[Optional[str], typer.Option("--model", help="Only findings on this model.")] = None,
    symptom: Annotated[Optional[str], typer.Option("--symptom", help="Only this symptom.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only buckets with this status: new, confirmed, fixed or flaky.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Show at most N buckets (table default 50, --json default all; 0: all).")] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip the first N buckets (the next page).")] = 0,
    store: StoreOpt = Path("fuzzconv-out"),
    json_: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """List findings, one row per bucket (same culprit step, parameters and symptom), worst first."""
    from ..oracle import SYMPTOMS
    from ..store import STATUSES

    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r} (known: {', '.join(STATUSES)})")
    if symptom is not None and symptom not in SYMPTOMS:
        raise UsageError(f"unknown symptom {symptom!r} (known: {', '.join(SYMPTOMS)})")
    page = (None if json_ else 50) if limit is None else (limit or None)
    sel = dict(model=model, symptom=symptom, status=status)
    with _open_store(store) as db:
        rows, n_buckets, n_findings = db.buckets(**sel, limit=page, offset=offset)
        unfinished = [] if json_ else db.campaigns(unfinished=True)
        if json_:
            # the findings of the listed buckets, bucket by bucket, one finding a line
            sys.stdout.write("[" + ",".join("\n" + f for f in db.bucket_findings_json(
                **sel, limit=page, offset=offset)) + "\n]\n")
    more = n_buckets - offset - len(rows)
    if json_:
        if more > 0:
            console.print(f"{more} more buckets: --offset {offset + len(rows)} for the next page, "
                          "--limit 0 for all")
        return
    from ..liveness import resume_hints, when

    if not rows and offset:
        out.print(f"{n_findings} findings in {n_buckets} buckets; none past --offset {offset}")
        return
    cols = [Col("ids", "name"), Col("symptom", "name"), Col("culprit"), Col("count", drop=5),
            Col("worst flip", drop=4), Col("models", "name", drop=6), Col("first seen", drop=8),
            Col("last seen", drop=7), Col("status", drop=3)]
    cells = [[", ".join(r["ids"]) + (" …" if r["count"] > len(r["ids"]) else ""),
              r["symptom"], op_text(r["culprit"]), str(r["count"]),
              f"{r['worst_flip_rate']:.1%}" if r["worst_flip_rate"] is not None else "—",
              ", ".join(r["models"]), when(r["first_seen"]), when(r["last_seen"]), r["status"]]
             for r in rows]
    print_table(out, cols, cells, wide=wide, title=f"{n_findings} findings in {n_buckets} buckets" + (
        f" (buckets {offset + 1}–{offset + len(rows)} of {n_buckets})" if len(rows) < n_buckets else ""))
    if more > 0:
        out.print(f"… {more} more buckets: --offset {offset + len(rows)} for the next page, "
                  f"--limit 0 for all, --json for every finding")
    for line in resume_hints(unfinished):
        out.print(Text(line))


@app.command()
def campaigns(*, store: StoreOpt = Path("fuzzconv-out"), json_: JsonOpt = False,
              wide: WideOpt = False) -> None:
    """List the campaigns: status (running, done or interrupted), when last seen, work done."""
    from ..liveness import when

    with _open_store(store) as db:
        camps = db.campaigns()
    keys = ("id", "model", "status", "recorded_status", "host", "pid", "seed", "started",
            "finished", "last_seen", "evaluations", "findings")
    if json_:
        print_json([{k: c[k] for k in keys} for c in camps])
        return
    cols = [Col("campaign", "name"), Col("model", "name"), Col("status", "name"), Col("last seen"),
            Col("evaluations", drop=2), Col("findings", drop=3), Col("started", drop=4),
            Col("host", "name", drop=5)]
    print_table(out, cols, [[c["id"], c["model"], c["status"], when(c["last_seen"]),
                             str(c["evaluations"]), str(c["findings"]), when(c["started"]),
                             c["host"] or "—"] for c in camps],
                title=f"{len(camps)} campaigns in {store}", wide=wide)


@app.command()
def show(
    finding_id: Annotated[str, typer.Argument(metavar="ID", help="Finding ID or unique prefix.")],
    *,
    store: StoreOpt = Path("fuzzconv-out"),
    json_: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Show one minimized finding."""
    with _open_store(store) as db:
        f = db.finding(finding_id)
    if json_:
        print_json(f)
        return
    t = Rows()
    fr = f.get("flip_rate")
    t.add_row("flip rate", f"{fr:.1%} of {f['images']} images" if fr is not None else "—")
    t.add_row("signature", f["signature"])
    t.add_row("status", f.get("status", "new") + (" (flaky)" if f.get("flaky") else ""))
    t.add_row("pipeline as found", pipeline_text(f["pipeline"]))
    t.add_row("minimal pipeline", pipeline_text(f.get("minimal_pipeline")))
    t.add_row("culprit", op_text(f.get("culprit")))
    if f.get("pending"):
        t.add_row("pending", f"{', '.join(f['pending'])} (a running hunt does them after coverage or in "
                             f"the last quarter of its budget; fuzzconv shrink {f['id']} completes them)")
    if f.get("culprit_uncertain"):
        t.add_row("culprit uncertain", f["culprit_uncertain"])
    sd = f.get("slowdown")
    if sd:
        against = ("the same pipeline unoptimised: " + pipeline_text(sd["base"])
                   if sd.get("vs") == "base" else "the source framework")
        t.add_row("slowdown", f"{sd['factor']:.2f}× slower: {sd['seconds']:.3g} s against "
                              f"{sd['base_seconds']:.3g} s per pass of {sd.get('batch', '?')} "
                              f"images, timed side by side (vs {against})")
    pr = f.get("probe")
    if pr:
        then = (f"{pr['why']}, so judged on all {f['images']} images" if pr.get("escalated")
                else f"{pr['symptom'] or 'agreed'} (not run on the rest)")
        t.add_row("probe", f"first judged on {pr['images']} fragile images: {then}")
    t.add_row("fix hint", f.get("fix_hint") or "—")
    t.add_row("minimal inputs", ", ".join(f.get("failing_inputs") or []) or "—")
    if f.get("flipping_images") is not None:
        t.add_row("flipping images", str(f.get("flipping_images")))
    t.add_row("first divergent node", f.get("first_divergent_node") or "—")
    path = f.get("node_errors") or []
    if path:
        t.add_row("error along the path", "; ".join(f"{n['node']}: {n['max_abs']:.3g}" for n in path[:12]))
    if f.get("reduced_model"):
        t.add_row("reduced subgraph", f"{f['reduced_model'].get('nodes')} nodes: {f['reduced_model'].get('path')}")
    if f.get("failure"):
        t.add_row("error", f"{f['failure']['error_class']} at {f['failure']['stage']}: {f['failure']['message'][:300]}")
    sh = f.get("shrink")
    if sh:
        prof = ", ".join(f"{k} {v['successes']}/{v['calls']}" for k, v in sh["profile"].items() if v["calls"])
        t.add_row("shrinking", f"{sh['steps_before']} → {sh['steps_after']} steps; 1-minimal: "
                               f"{sh['one_minimal']}; passes (accepted/tried): {prof or '—'}")
    ev = f["evaluations"]
    t.add_row("evaluations", f"hunt {ev['hunt']}, shrink {ev['shrink']} fresh, {ev['cache_hits']} cache hits")
    t.add_row("versions", ", ".join(f"{k} {v}" for k, v in f["versions"].items()))
    t.add_row("bundle", f.get("bundle") or "—")
    print_table(out, KEY_VALUE, t, title=f"{f['id']} — {f['symptom']} on {f['model']}",
                show_header=False, wide=wide)


@app.command()
def shrink(
    finding_id: Annotated[str, typer.Argument(metavar="ID", help="Finding ID or unique prefix.")],
    *,
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Shrink and localize a stored finding again."""
    from ..findings import shrink_finding

    with Status() as status:
        f = shrink_finding(store, finding_id, plugin or [], status)
    if json_:
        print_json(f)
    else:
        out.print(f"{f['id']}: {pipeline_text(f.get('minimal_pipeline'))}; culprit "
                  f"{op_text(f.get('culprit'))}; fix hint: {f.get('fix_hint') or '—'}")


@app.command()
def repro(
    finding_id: Annotated[str, typer.Argument(
        metavar="ID|BUNDLE", help="Finding ID or unique prefix; or a bundle directory or "
                                  ".tar.gz/.zip archive (whatever exists on disk is a bundle).")],
    *,
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
    trust_plugin: Annotated[bool, typer.Option("--trust-plugin", help="Run a bundle that carries "
                                               "plugin code (read it first).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Re-run a finding's minimal case from a cold cache, or a bundle's repro.py (exit 1: it reproduces)."""
    from ..findings import repro_finding
    from ..report.bundle_import import looks_like_bundle_path, run_bundle

    if Path(finding_id).expanduser().exists():
        if plugin:
            raise UsageError("--plugin applies to stored findings; a bundle brings its own "
                             "plugin (see --trust-plugin)")
        with Status() as status:
            r = run_bundle(Path(finding_id), trust_plugin=trust_plugin, say=status)
        if json_:
            print_json(r.to_dict())
        else:
            sys.stdout.write(r.output if r.output.endswith("\n") else r.output + "\n")
            out.print(f"{r.finding} (bundle {finding_id}): "
                      f"{'REPRODUCED' if r.reproduced else 'NOT REPRODUCED'}")
        raise typer.Exit(1 if r.reproduced else 0)
    if looks_like_bundle_path(finding_id):
        raise UsageError(f"no bundle at {finding_id}")
    if trust_plugin:
        raise UsageError(f"--trust-plugin applies to bundles, and there is no file or directory "
                         f"{finding_id}")
    with Status() as status:
        still, f = repro_finding(store, finding_id, plugin or [], status)
    if json_:
        print_json({"id": f["id"], "reproduced": still, "status": f["status"]})
    else:
        out.print(f"{f['id']}: {'REPRODUCED' if still else 'no longer reproduces — marked fixed'}")
    raise typer.Exit(1 if still else 0)


# -- filing ---------------------------------------------------------------------------------------
@app.command()
def bundle(
    finding_id: Annotated[str, typer.Argument(metavar="ID", help="Finding ID or unique prefix.")],
    *,
    output: Annotated[Path, typer.Option("-o", "--out", help="Directory to write the bundle to.")],
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Do not run repro.py once after writing.")] = False,
    archive: Annotated[bool, typer.Option("--archive", help="Also write DIR.tar.gz, the bundle as one file to attach.")] = False,
) -> None:
    """Write a standalone bug case: issue text and a repro.py that needs only the culprit's libraries."""
    from ..report.bundle import write_bundle
    from ..report.bundle_import import archive_bundle

    with Status() as status:
        path = write_bundle(store, finding_id, output, plugin or [], verify=not no_check, say=status)
    out.print(f"bundle written to {path}; run: python {path / 'repro.py'}")
    if archive:
        packed = archive_bundle(path)
        out.print(f"archive written to {packed}; run it with: fuzzconv repro {packed.name}")


@app.command()
def report(
    *,
    html: Annotated[Path, typer.Option("--html", help="Write the offline HTML report to this file.")],
    campaign: Annotated[Optional[str], typer.Option("--campaign", help="Only this campaign (ID or prefix).")] = None,
    study: Annotated[Optional[Path], typer.Option("--study", help="A `fuzzconv study` output directory to include.")] = None,
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
) -> None:
    """Write one static HTML page: campaign summary, sortable findings, images with top-5, charts."""
    from ..report.html import write_html

    with Status() as status:
        path = write_html(store, html, campaign, study=study, plugins=plugin or [], say=status)
    out.print(f"report written to {path}")

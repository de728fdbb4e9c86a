"""The SQLite store: campaigns, every evaluation, and findings.

One file, ``<store>/fuzzconv.sqlite``, in WAL mode so readers (``reports``) never block a running
hunt. Only the hunting process writes. Each evaluation is committed as soon as it is known, so a
killed hunt loses at most the evaluation in flight, and ``--resume`` re-evaluates nothing that was
committed. Findings are stored in the finding JSON shape of ARCHITECTURE.md (column ``data``),
with the columns that listings filter and sort on kept beside it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from .canonical import canonical_json
from .errors import UsageError
from .liveness import shown_status, this_process

SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    versions TEXT NOT NULL,
    status TEXT NOT NULL,            -- running | done | interrupted (as recorded; see liveness)
    started REAL NOT NULL,
    finished REAL,
    pid INTEGER,                     -- the process that runs it, on host, started at proc_start
    host TEXT,
    proc_start TEXT,
    last_seen REAL                   -- its last evaluation or status change
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign TEXT NOT NULL REFERENCES campaigns(id),
    seq INTEGER NOT NULL,
    phase TEXT NOT NULL,             -- replay | coverage | mutate | shrink
    pipeline_hash TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    symptom TEXT,
    outcome TEXT NOT NULL,
    timings TEXT NOT NULL,
    fresh INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    created REAL NOT NULL,
    UNIQUE (campaign, pipeline_hash)
);
CREATE INDEX IF NOT EXISTS evaluations_campaign ON evaluations(campaign, seq);
CREATE TABLE IF NOT EXISTS findings (
    id TEXT PRIMARY KEY,
    campaign TEXT NOT NULL REFERENCES campaigns(id),
    model TEXT NOT NULL,
    symptom TEXT NOT NULL,
    signature TEXT NOT NULL,
    bucket TEXT NOT NULL,
    status TEXT NOT NULL,            -- new | confirmed | fixed | flaky
    flip_rate REAL,
    data TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_model ON findings(model, status);
CREATE INDEX IF NOT EXISTS findings_campaign ON findings(campaign);
-- what a campaign needs to replay its own decisions on --resume (e.g. what was cached at its start)
CREATE TABLE IF NOT EXISTS campaign_notes (
    campaign TEXT NOT NULL REFERENCES campaigns(id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (campaign, name)
);
-- what steps and runtimes measurably cost, for every model (see fuzzconv.costs)
CREATE TABLE IF NOT EXISTS costs (
    model TEXT NOT NULL,
    op TEXT NOT NULL,
    params TEXT NOT NULL,
    kind TEXT NOT NULL,              -- step | load | image
    seconds REAL NOT NULL,
    campaign TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS costs_created ON costs(created);
-- generated models (fuzzconv.gen): the spec each name stands for, to rebuild it anywhere
CREATE TABLE IF NOT EXISTS generated_models (
    name TEXT PRIMARY KEY,           -- gen:<framework>:<digest of the spec>
    spec TEXT NOT NULL,              -- its canonical JSON
    created REAL NOT NULL
);
-- `reports` groups findings by bucket from this index alone, never reading the JSON documents
CREATE INDEX IF NOT EXISTS findings_triage ON findings(bucket, status, flip_rate, first_seen,
                                                       last_seen, model, symptom, campaign);
"""

#: Columns that campaigns gained after the first stores were written (added when missing).
_CAMPAIGN_FACTS = {"pid": "INTEGER", "host": "TEXT", "proc_start": "TEXT", "last_seen": "REAL"}

STATUSES = ("new", "confirmed", "fixed", "flaky")
# A bucket is as alive as its most alive finding: its status is the first of these that it holds.
_ALIVE = ("confirmed", "new", "flaky", "fixed")
_RANK = "CASE status " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(_ALIVE)) + " END"


# A campaign row with its counts; last_seen falls back on the last evaluation for campaigns
# recorded before there was a last_seen (SELECT * then has no such column: see _campaign_row).
_CAMPAIGN_ROWS = """SELECT c.*,
    (SELECT COUNT(*) FROM evaluations AS e WHERE e.campaign = c.id) AS evaluations,
    (SELECT COUNT(*) FROM findings AS f WHERE f.campaign = c.id) AS findings,
    (SELECT MAX(e.created) FROM evaluations AS e WHERE e.campaign = c.id) AS last_evaluation
    FROM campaigns AS c"""


def _campaign_row(row: sqlite3.Row) -> dict[str, Any]:
    d = {k: None for k in _CAMPAIGN_FACTS} | dict(row)
    last = d.pop("last_evaluation")
    d["last_seen"] = d["last_seen"] or max(t for t in (last, d["finished"], d["started"]) if t)
    d["recorded_status"] = d["status"]
    d["status"] = shown_status(d)
    return d


class Store:
    """The store of one directory. Use as a context manager."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / "fuzzconv.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise UsageError(f"cannot open the store {self.path}: {exc}") from None
        self.db.row_factory = sqlite3.Row
        self._facts_ready = False

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- campaigns ---------------------------------------------------------------------------
    def _campaign_facts(self) -> None:
        """Give a store written before campaigns recorded their process the columns for it.

        Only writers call this, so reading an old store (``reports``, ``show``) never changes it.
        """
        if self._facts_ready:
            return
        have = {r[1] for r in self.db.execute("PRAGMA table_info(campaigns)")}
        for col, kind in _CAMPAIGN_FACTS.items():
            if col not in have:
                try:
                    self.db.execute(f"ALTER TABLE campaigns ADD COLUMN {col} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it meanwhile
                    if "duplicate column" not in str(exc):
                        raise
        self._facts_ready = True

    def new_campaign(self, model: str, seed: int, config: dict[str, Any],
                     versions: dict[str, str]) -> str:
        self._campaign_facts()
        cid = "C-" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
        me, now = this_process(), time.time()
        self.db.execute(
            "INSERT INTO campaigns (id, model, seed, config, versions, status, started, pid, host,"
            " proc_start, last_seen) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
            (cid, model, seed, json.dumps(config, sort_keys=True), json.dumps(versions), now,
             me["pid"], me["host"], me["proc_start"], now))
        return cid

    def campaign(self, cid: str) -> dict[str, Any]:
        """One campaign (ID or unique prefix), its ``status`` as :func:`campaigns` shows it."""
        rows = self.db.execute(_CAMPAIGN_ROWS + " WHERE c.id = ? OR c.id LIKE ?",
                               (cid, cid + "%")).fetchall()
        if not rows:
            raise UsageError(f"no campaign {cid!r} in {self.path.parent} "
                             "(fuzzconv campaigns lists them)")
        if len(rows) > 1:
            raise UsageError(f"campaign prefix {cid!r} is ambiguous ({len(rows)} match)")
        d = _campaign_row(rows[0])
        d["config"] = json.loads(d["config"])
        d["versions"] = json.loads(d["versions"])
        return d

    def campaigns(self, unfinished: bool = False) -> list[dict[str, Any]]:
        """Every campaign (only those not ``done`` when ``unfinished``), oldest first, with its
        evaluations and findings counted.

        ``status`` is what is known now: a campaign recorded as ``running`` whose process on this
        host is gone is ``interrupted`` (``recorded_status`` keeps what the store says).
        ``last_seen`` is its last evaluation or status change.
        """
        where = " WHERE c.status != 'done'" if unfinished else ""
        return [_campaign_row(r) for r in self.db.execute(_CAMPAIGN_ROWS + where
                                                          + " ORDER BY c.started")]

    def set_campaign_status(self, cid: str, status: str) -> None:
        """Record a status; ``running`` (a new start or a resume) also records this process."""
        self._campaign_facts()
        now = time.time()
        if status == "running":
            me = this_process()
            self.db.execute("UPDATE campaigns SET status = ?, finished = NULL, pid = ?, host = ?,"
                            " proc_start = ?, last_seen = ? WHERE id = ?",
                            (status, me["pid"], me["host"], me["proc_start"], now, cid))
        else:
            self.db.execute("UPDATE campaigns SET status = ?, finished = ?, last_seen = ?"
                            " WHERE id = ?", (status, now, now, cid))

    # -- evaluations -------------------------------------------------------------------------
    def add_evaluation(self, cid: str, phase: str, pipeline: dict[str, Any], pipeline_hash: str,
                       symptom: str | None, outcome: dict[str, Any], timings: dict[str, float],
                       fresh: int, cached: int) -> int:
        self._campaign_facts()
        seq = self.evaluation_count(cid)
        now = time.time()
        # One transaction: the campaign's heartbeat (last_seen, which says when a campaign whose
        # process died was last alive) is always its last evaluation's time.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO evaluations (campaign, seq, phase, pipeline_hash, pipeline,"
                " symptom, outcome, timings, fresh, cached, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (cid, seq, phase, pipeline_hash, json.dumps(pipeline, sort_keys=True), symptom,
                 json.dumps(outcome, default=str), json.dumps(timings), fresh, cached, now))
            self.db.execute("UPDATE campaigns SET last_seen = ? WHERE id = ?", (now, cid))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return cur.lastrowid or 0

    def evaluation_count(self, cid: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE campaign = ?",
                               (cid,)).fetchone()[0]

    def evaluations(self, cid: str) -> Iterator[dict[str, Any]]:
        for r in self.db.execute("SELECT * FROM evaluations WHERE campaign = ? ORDER BY seq", (cid,)):
            d = dict(r)
            for k in ("pipeline", "outcome", "timings"):
                d[k] = json.loads(d[k])
            yield d

    def evaluated_pipelines(self, before: float | None = None) -> Iterator[tuple[str, dict, str | None]]:
        """(model, pipeline, symptom) of every evaluation of every campaign, oldest first;
        with ``before``, only those made before that time."""
        q = ("SELECT c.model, e.pipeline, e.symptom FROM evaluations e JOIN campaigns c"
             " ON c.id = e.campaign")
        args: list[Any] = []
        if before is not None:
            q += " WHERE e.created < ?"
            args.append(before)
        for model, pipeline, symptom in self.db.execute(q + " ORDER BY e.created", args):
            yield model, json.loads(pipeline), symptom

    def set_note(self, cid: str, name: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO campaign_notes (campaign, name, value) VALUES (?,?,?)",
                        (cid, name, json.dumps(value)))

    def note(self, cid: str, name: str) -> Any:
        row = self.db.execute("SELECT value FROM campaign_notes WHERE campaign = ? AND name = ?",
                              (cid, name)).fetchone()
        return json.loads(row[0]) if row else None

    # -- costs -------------------------------------------------------------------------------
    def add_costs(self, model: str, cid: str | None, rows: list[dict[str, Any]]) -> None:
        """Record what fresh steps and runs cost (``{"op", "params", "kind", "seconds"}``)."""
        now = time.time()
        self.db.executemany(
            "INSERT INTO costs (model, op, params, kind, seconds, campaign, created)"
            " VALUES (?,?,?,?,?,?,?)",
            [(model, r["op"], canonical_json(r["params"]),
              r["kind"], float(r["seconds"]), cid, now) for r in rows])

    def costs(self, before: float | None = None) -> list[tuple[str, str, str, str, float]]:
        """(model, op, params JSON, kind, seconds) of every measurement, or those before a time."""
        q, args = "SELECT model, op, params, kind, seconds FROM costs", []
        if before is not None:
            q += " WHERE created < ?"
            args.append(before)
        return [tuple(r) for r in self.db.execute(q + " ORDER BY created", args)]

    def evaluated_hashes(self, cid: str) -> set[str]:
        return {r[0] for r in self.db.execute(
            "SELECT pipeline_hash FROM evaluations WHERE campaign = ?", (cid,))}

    # -- findings ----------------------------------------------------------------------------
    def upsert_finding(self, finding: dict[str, Any], cid: str, bucket: str) -> None:
        now = time.time()
        old = self.db.execute("SELECT first_seen FROM findings WHERE id = ?",
                              (finding["id"],)).fetchone()
        first = old[0] if old else now
        status = finding.get("status", "new")
        self.db.execute(
            "INSERT OR REPLACE INTO findings (id, campaign, model, symptom, signature, bucket, status,"
            " flip_rate, data, first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (finding["id"], cid, finding["model"], finding["symptom"], finding["signature"], bucket,
             status, finding.get("flip_rate"), json.dumps(finding, sort_keys=True, default=str),
             first, now))

    def set_finding_status(self, fid: str, status: str, extra: dict[str, Any] | None = None) -> None:
        f = self.finding(fid)
        f["status"] = status
        f.update(extra or {})
        self.db.execute("UPDATE findings SET status = ?, data = ?, last_seen = ? WHERE id = ?",
                        (status, json.dumps(f, sort_keys=True, default=str), time.time(), f["id"]))

    def finding(self, fid: str) -> dict[str, Any]:
        cols = "SELECT data, first_seen, last_seen, status FROM findings"
        rows = self.db.execute(f"{cols} WHERE id = ?", (fid,)).fetchall()
        if not rows:  # a prefix: a range of the primary key, so no scan of the documents
            rows = self.db.execute(f"{cols} WHERE id >= ? AND id < ? LIMIT 2",
                                   (fid, fid + "\U0010ffff")).fetchall()
        if not rows:  # the same prefix in other letter case
            pattern = fid.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self.db.execute(f"{cols} WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                                   (pattern,)).fetchall()
        if not rows:
            raise UsageError(f"no finding {fid!r} in {self.path.parent}")
        if len(rows) > 1:
            raise UsageError(f"finding prefix {fid!r} is ambiguous")
        f = json.loads(rows[0][0])
        f.update(first_seen=rows[0][1], last_seen=rows[0][2], status=rows[0][3])
        return f

    def findings(self, model: str | None = None, campaign: str | None = None,
                 symptom: str | None = None, status: str | None = None,
                 model_prefix: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT data, first_seen, last_seen, status, bucket FROM findings WHERE 1=1", []
        for col, val in (("model", model), ("campaign", campaign), ("symptom", symptom),
                         ("status", status)):
            if val is not None:
                q += f" AND {col} = ?"
                args.append(val)
        if model_prefix is not None:  # a range of the index: the models of a generated family
            q += " AND model >= ? AND model < ?"
            args += [model_prefix, model_prefix + "\U0010ffff"]
        out = []
        for r in self.db.execute(q + " ORDER BY first_seen", args):
            f = json.loads(r[0])
            f.update(first_seen=r[1], last_seen=r[2], status=r[3], bucket=r[4])
            out.append(f)
        return out

    # -- buckets -----------------------------------------------------------------------------
    def _buckets_sql(self, model: str | None, symptom: str | None, status: str | None,
                     limit: int | None, offset: int) -> tuple[str, str, list[Any], list[Any]]:
        """The ``page`` CTE (one ranked row per bucket of this page) and the filter on findings."""
        where, args = "", []
        for col, val in (("model", model), ("symptom", symptom)):
            if val is not None:
                where += f" AND {col} = ?"
                args.append(val)
        having = f"HAVING MIN({_RANK}) = ?" if status is not None else ""
        cte = f"""
            WITH b AS (
                SELECT bucket, COUNT(*) AS count, MAX(flip_rate) AS worst_flip_rate,
                       MIN(first_seen) AS first_seen, MAX(last_seen) AS last_seen,
                       MIN({_RANK}) AS rank, COUNT(DISTINCT campaign) AS campaigns,
                       GROUP_CONCAT(DISTINCT model) AS models
                FROM findings WHERE 1=1 {where} GROUP BY bucket {having}),
            page AS (
                SELECT *, ROW_NUMBER() OVER (ORDER BY COALESCE(worst_flip_rate, 0) DESC,
                                             count DESC, first_seen, bucket) AS ord,
                       COUNT(*) OVER () AS n_buckets, SUM(count) OVER () AS n_findings
                FROM b ORDER BY ord LIMIT ? OFFSET ?)"""
        page_args = [*args, *([_ALIVE.index(status)] if status is not None else []),
                     -1 if limit is None else limit, offset]
        return cte, where, page_args, args

    def buckets(self, model: str | None = None, symptom: str | None = None,
                status: str | None = None, limit: int | None = None,
                offset: int = 0) -> tuple[list[dict[str, Any]], int, int]:
        """One row per bucket, worst first (highest flip rate, then most findings).

        Grouping, filtering and ordering happen in SQL on an index, so a page costs the same on
        ten findings as on ten thousand. ``model`` and ``symptom`` select findings; ``status``
        selects buckets by their status (that of their most alive finding).

        Returns:
            (the rows of this page, buckets matching in all, findings in them).
        """
        cte, where, page_args, args = self._buckets_sql(model, symptom, status, limit, offset)
        rows, n_buckets, n_findings = [], 0, 0
        for r in self.db.execute(cte + " SELECT * FROM page ORDER BY ord", page_args).fetchall():
            n_buckets, n_findings = r["n_buckets"], r["n_findings"]
            first = self.db.execute(
                "SELECT id, symptom, signature, json_extract(data, '$.culprit') FROM findings"
                f" WHERE bucket = ? {where} ORDER BY first_seen, id LIMIT 3",
                [r["bucket"], *args]).fetchall()
            rows.append({
                "bucket": r["bucket"], "symptom": first[0][1], "signature": first[0][2],
                "culprit": json.loads(first[0][3]) if first[0][3] else None,
                "count": r["count"], "campaigns": r["campaigns"],
                "worst_flip_rate": r["worst_flip_rate"], "status": _ALIVE[r["rank"]],
                "models": sorted(r["models"].split(",")), "first_seen": r["first_seen"],
                "last_seen": r["last_seen"], "ids": [f[0] for f in first]})
        if not rows and offset:  # past the last page: still say how many there are
            n_buckets, n_findings = self.db.execute(
                cte.replace("LIMIT ? OFFSET ?", "") + " SELECT COUNT(*), COALESCE(SUM(count), 0)"
                " FROM page", page_args[:-2]).fetchone()
        return rows, n_buckets, n_findings

    def bucket_findings_json(self, model: str | None = None, symptom: str | None = None,
                             status: str | None = None, limit: int | None = None,
                             offset: int = 0) -> Iterator[str]:
        """The findings of the buckets ``buckets`` lists with the same arguments, in its order,
        as compact JSON texts: the stored document with its current status and sightings, its
        ``bucket``, and the bucket's ``bucket_count`` and ``bucket_status``.

        SQLite patches the stored documents itself (``json_set``), so listing every finding of
        a large store does not parse and re-encode each one in Python.
        """
        cte, where, page_args, args = self._buckets_sql(model, symptom, status, limit, offset)
        alive = "CASE page.rank " + " ".join(f"WHEN {i} THEN '{s}'" for i, s in enumerate(_ALIVE)) + " END"
        q = (cte + " SELECT json_set(f.data, '$.first_seen', f.first_seen, '$.last_seen',"
             " f.last_seen, '$.status', f.status, '$.bucket', f.bucket, '$.bucket_count',"
             f" page.count, '$.bucket_status', {alive})"
             " FROM page JOIN findings AS f ON f.bucket = page.bucket"
             + where.replace(" AND ", " AND f.") + " ORDER BY page.ord, f.first_seen, f.id")
        for (text,) in self.db.execute(q, [*page_args, *args]):
            yield text

    # -- generated models --------------------------------------------------------------------
    def add_generated(self, name: str, spec_json: str) -> None:
        """Keep the spec of a generated model (its name is its digest: written once)."""
        self.db.execute("INSERT OR IGNORE INTO generated_models (name, spec, created)"
                        " VALUES (?, ?, ?)", (name, spec_json, time.time()))

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def stored_spec(directory: Path, name: str) -> dict[str, Any] | None:
    """The stored spec of a generated model, read without writing anything (a store that has
    no such table, or is not there, holds none)."""
    path = Path(directory) / "fuzzconv.sqlite"
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            row = db.execute("SELECT spec FROM generated_models WHERE name = ?", (name,)).fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None
    if row is None:
        return None
    try:
        spec = json.loads(row[0])
    except ValueError:
        spec = row[0]  # not JSON: the vocabulary check says so, naming the model
    return spec if isinstance(spec, dict) else {"invalid": spec}

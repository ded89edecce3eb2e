"""`kalshi-shadow bench history`: what a live tick and each scheduled job cost on top of 1 day and of 30 days of
history, what the history weighs on disk, and what an edited rule set's replay of it costs.

A platform left running for months must not slow down as its history grows: every step should cost what its new
data costs. So the bench builds a warehouse of D days at the default synthetic day's scale (50 strikes per hourly
ladder, a quote every 5 s: 1.75M quotes a day) with the pipeline's own steps (priced, settled, decided by every rule
set of the rules file; scores are a view), ending 20 minutes before now so that wall-clock windows look at real
data. Then, for each of `--ticks` ticks, it writes the next 5 minutes as raw files the way the collectors do (a file
per table every 5 s) and runs `live_job` in process with Dagster, timing each step from the run's own events, the
way `up` runs a tick (inline, its steps sharing one open database); as many ticks again run as a launched run would
(each step opening and closing the file, which checkpoints: a cost that grows with the file), reported apart; then
one run of each scheduled job, the settlements step's warehouse work, and `kalshi-shadow status`'s reads. The
figures of two histories (default 1 and 30 days) are printed side by side with their ratio.

Storage: the warehouse file per day of history, and the raw archive of a day (the hourly zstd Parquet files
compaction writes, from that day's rows).

Replay: a copy of the `careful` set with one threshold changed is a new version; it replays the whole history in
slices of the replay job's budget, as `decision_replay_job` would, timed (O(D): seconds per day of history).

`--live-minutes N` also runs `kalshi-shadow up --fast-clock` on the biggest history with that edited rules file,
and measures the live lag while the replay runs (real processes, as `bench live`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

SLOT_SECONDS = 5         # collectors flush a file per table about this often
TICK_MINUTES = 5
TARGET_RATIO = 1.25      # the long history's tick within this of the short one's
TARGET_TICK_S = 5.0      # and under this
TARGET_STORAGE_GIB = 10  # 30 days, archives included
RAW_WRITERS = {"spot_ticks": "benchspot", "kalshi_quotes": "benchquot", "kalshi_markets": "benchmkts",
               "kalshi_series": "benchseri", "collector_events": "benchevts"}
FILES_PER_DAY = 86400 // SLOT_SECONDS  # per raw table: what the ledger of a real day holds


# ---------------------------------------------------------------------------------------------------------------
# Building a history


def build(data_dir: Path, days: int, strikes: int, quote_every: int, end: datetime) -> dict:
    """Fill `data_dir/warehouse.duckdb` with `days` days ending at `end`; returns timings and counts."""
    from kalshi_shadow.decisions.engine import decide, settle
    from kalshi_shadow.decisions.rulesets import load_rule_sets
    from kalshi_shadow.pricing.snapshots import price_new_quotes, refresh_spot
    from kalshi_shadow.pricing.synthetic import generate, publish_until
    from kalshi_shadow.reports.synthetic_history import RECENTRE_SQL, REDRAW_MIDS_SQL, SETTLE_SQL
    from kalshi_shadow.scoring.settlements import OBS_TABLE_SQL, record_observations
    from kalshi_shadow.warehouse.connection import connect
    from kalshi_shadow.warehouse.contracts import refresh_contracts
    from kalshi_shadow.warehouse.ddl import ensure_schema

    conn = connect(data_dir / "warehouse.duckdb")
    ensure_schema(conn)
    t_build = time.perf_counter()
    price = 95000.0
    for k in range(days):
        day = end - timedelta(days=days - k)
        generate(conn, day, 24, strikes=strikes, quote_every=quote_every, seed=(0.42 + k / 997) % 1,
                 hour_offset=24 * k, first_trade_id=86400 * k, start_price=price)
        price = conn.execute("SELECT price::DOUBLE FROM syn_spot ORDER BY ts DESC LIMIT 1").fetchall()[0][0]
        for q in RECENTRE_SQL:
            conn.execute(q)
        conn.execute(REDRAW_MIDS_SQL, {"noise": 0.06, "bias": 0.0})
        publish_until(conn, day + timedelta(days=1), load_id=k + 1)
        refresh_contracts(conn)
        refresh_spot(conn)
        while price_new_quotes(conn, lot=100).rows:
            pass
        conn.execute(OBS_TABLE_SQL)
        conn.execute(SETTLE_SQL, {"settled_until": day + timedelta(days=1)})
        record_observations(conn)
        # What the live runs would have stamped: created a few seconds after the quote was seen, and a ledger of a
        # day's raw files (one per table every few seconds), loaded as they came and archived.
        conn.execute("UPDATE kalshi_edge_snapshot_quotes SET created_at = seen_ts + INTERVAL 20 SECOND WHERE quote_date >= ?",
                     [(day - timedelta(days=1)).date()])
        conn.execute(LEDGER_SQL, {"start": day, "n": FILES_PER_DAY, "every": SLOT_SECONDS, "k": k})
    t_priced = time.perf_counter() - t_build
    conn.execute("SELECT max(nextval('raw_file_load_ids')) FROM range(?)", [days + 1])  # live loads come after them
    t = time.perf_counter()
    sets = load_rule_sets()
    for rs in sets:
        decide(conn, rs)
    settle(conn)
    t_decide = time.perf_counter() - t
    conn.execute("UPDATE kalshi_would_trades SET created_at = decided_ts + INTERVAL 25 SECOND")
    counts = dict(conn.execute("""SELECT 'quotes', count(*) FROM kalshi_quotes UNION ALL SELECT 'snapshots', count(*) FROM kalshi_edge_snapshots
                                  UNION ALL SELECT 'decisions', count(*) FROM kalshi_would_trades
                                  UNION ALL SELECT 'takes', count(*) FROM kalshi_decision_positions
                                  UNION ALL SELECT 'contracts', count(*) FROM kalshi_contracts
                                  UNION ALL SELECT 'ledger', count(*) FROM raw_file_loads""").fetchall())
    conn.execute("CHECKPOINT")
    conn.close()
    return {"build_seconds": t_priced, "decide_seconds": t_decide, "rule_sets": len(sets), **counts}


# A day of raw-file ledger rows per table, as the loads would have written them (negative load ids: none of the
# warehouse's rows point at them, the history's rows came in one load per day), already archived.
LEDGER_SQL = """
INSERT INTO raw_file_loads (load_id, table_name, file_name, row_count, loaded_at, writer, seq, flushed_at, archived_to)
SELECT -($k * $n * 5 + t.i * $n + r.i) - 1, t.name,
       t.name || '/date=' || strftime($start::TIMESTAMPTZ + to_seconds(r.i * $every), '%Y-%m-%d') || '/'
           || strftime($start::TIMESTAMPTZ + to_seconds(r.i * $every), '%Y%m%dT%H%M%S%f') || '-hist-' || lpad((r.i + 1)::VARCHAR, 6, '0') || '.parquet',
       20, $start::TIMESTAMPTZ + to_seconds(r.i * $every + 10), 'hist' || $k, r.i + 1, $start::TIMESTAMPTZ + to_seconds(r.i * $every),
       '_archive/' || t.name || '/date=' || strftime($start::TIMESTAMPTZ + to_seconds(r.i * $every), '%Y-%m-%d') || '/00-hist.parquet'
FROM (SELECT * FROM (VALUES (0, 'spot_ticks'), (1, 'kalshi_quotes'), (2, 'kalshi_markets'), (3, 'kalshi_series'),
                            (4, 'collector_events')) AS v(i, name)) AS t, range(0, $n) AS r(i)
"""


# ---------------------------------------------------------------------------------------------------------------
# One tick: the next 5 minutes as raw files, then live_job


def _write_raw(conn, raw_dir: Path, lo: datetime, hi: datetime, seqs: dict[str, int]) -> int:
    """Write the staged syn_* rows with ts in [lo, hi) as the collectors would: a file per table per slot."""
    import polars as pl

    from kalshi_shadow.raw.schemas import RAW_SCHEMAS
    from kalshi_shadow.raw.store import write_batch_atomically

    queries = {
        "spot_ticks": "SELECT ts, received_ts, product_id, sequence, trade_id, price FROM syn_spot WHERE ts >= $lo AND ts < $hi",
        "kalshi_quotes": "SELECT * FROM syn_quotes WHERE ts >= $lo AND ts < $hi",
        "kalshi_markets": """SELECT * EXCLUDE (ts), ts FROM syn_market_rows WHERE ts >= $lo AND ts < $hi""",
        "kalshi_series": """SELECT $lo AS ts, s AS series_ticker, 'quadratic' AS fee_type, 1.0 AS fee_multiplier, '{}' AS raw_json,
                                   $lo AS effective_ts FROM (VALUES ('KXBTCD'), ('KXBTC'), ('KXBTC15M')) AS v(s)
                            WHERE minute($lo) % 10 = 0 AND second($lo) = 0""",
        "collector_events": "SELECT $lo AS ts, 'quotes' AS collector, 'heartbeat' AS kind, '' AS detail, 1 AS count WHERE false",
    }
    files = 0
    t = lo
    while t < hi:
        u = t + timedelta(seconds=SLOT_SECONDS)
        for table, sql in queries.items():
            params = {k: v for k, v in (("lo", t), ("hi", u)) if f"${k}" in sql}
            df = pl.from_arrow(conn.sql(sql, params=params).to_arrow_table())
            df = df.select([pl.col(c).cast(dt) if c in df.columns else pl.lit(None, dtype=dt).alias(c)
                            for c, dt in RAW_SCHEMAS[table].items()])
            seqs[table] += 1
            write_batch_atomically(df, raw_dir / table / f"date={u:%Y-%m-%d}", f"{u:%Y%m%dT%H%M%S%f}-{RAW_WRITERS[table]}-{seqs[table]:06d}")
            files += 1
        t = u
    return files


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds per step of a run, from its STEP_START and STEP_SUCCESS/FAILURE events."""
    import dagster as dg

    starts, out = {}, {}
    for e in instance.all_logs(run_id):
        ev = e.dagster_event
        if ev is None or ev.step_key is None:
            continue
        if ev.event_type == dg.DagsterEventType.STEP_START:
            starts[ev.step_key] = e.timestamp
        elif ev.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            out[ev.step_key] = e.timestamp - starts.get(ev.step_key, e.timestamp)
    return out


def ticks(data_dir: Path, days: int, strikes: int, quote_every: int, end: datetime, n: int, first: int = 0) -> dict:
    """Child: `n` live ticks on top of the history (from tick `first`: a history already ticked goes on after those),
    then one run of each scheduled job; returns seconds per step."""
    os.environ["KALSHI_SHADOW_DATA_DIR"] = str(data_dir)
    import dagster as dg
    import duckdb

    from kalshi_shadow import status
    from kalshi_shadow.defs.pricing import LIVE_TAG
    from kalshi_shadow.defs.resources import resources, warehouse_from_settings
    from kalshi_shadow.definitions import defs
    from kalshi_shadow.pricing.synthetic import generate
    from kalshi_shadow.reports.synthetic_history import RECENTRE_SQL, REDRAW_MIDS_SQL
    from kalshi_shadow.warehouse.connection import connect, utc

    raw = data_dir / "raw"
    conn = connect(data_dir / "warehouse.duckdb")
    price = conn.execute("SELECT arg_max(price::DOUBLE, ts) FROM spot_ticks WHERE ts > ?", [end - timedelta(hours=1)]).fetchall()[0][0]
    conn.close()  # the runs open the file themselves, step by step
    staged = utc(duckdb.connect())  # the next hour of market data, staged in memory, written out tick by tick
    generate(staged, end, 1, strikes=strikes, quote_every=quote_every, seed=0.77, hour_offset=24 * days,
             first_trade_id=86400 * days, start_price=price)
    for q in RECENTRE_SQL:
        staged.execute(q)
    staged.execute(REDRAW_MIDS_SQL, {"noise": 0.06, "bias": 0.0})
    seqs = {t: first * TICK_MINUTES * 60 // SLOT_SECONDS for t in RAW_WRITERS}
    instance = dg.DagsterInstance.ephemeral()
    live = defs.resolve_job_def("live_job")
    by_mode: dict[bool, list[dict[str, float]]] = {True: [], False: []}  # held open (inline) or not (launched)
    rows: list[int] = []
    for i in range(2 * n):
        # Ticks alternate: as `up` runs them (inline, `defs/inline.py`: one open database for the run's steps), and
        # as a launched run does when another run holds the queue (each step opens and closes the file).
        held = i % 2 == 0
        lo = end + timedelta(minutes=TICK_MINUTES * (first + i))
        _write_raw(staged, raw, lo, lo + timedelta(minutes=TICK_MINUTES), seqs)
        res = resources()
        res["warehouse"] = warehouse_from_settings(hold_open=held)
        t = time.perf_counter()
        result = live.execute_in_process(instance=instance, partition_key=datetime.now(timezone.utc).date().isoformat(),
                                         tags={LIVE_TAG: "live"}, resources=res)
        whole = time.perf_counter() - t
        assert result.success, "live_job failed"
        steps = _step_seconds(instance, result.run_id)
        steps["whole tick (run wall time)"] = whole
        by_mode[held].append(steps)
        rows += [int(m.metadata["rows"].value) for m in result.asset_materializations_for_node("kalshi_edge_snapshots")
                 if "rows" in m.metadata]  # (a run's other days' events carry no counts)
    staged.close()
    launched = statistics.median(t["whole tick (run wall time)"] for t in by_mode[False])
    per_tick = by_mode[True]
    median = {k: statistics.median(t[k] for t in per_tick if k in t) for k in per_tick[0]}
    jobs = scheduled_jobs(defs, instance, data_dir, end + timedelta(minutes=TICK_MINUTES * (first + n)))
    t = time.perf_counter()
    st = status.warehouse(data_dir / "warehouse.duckdb", 10.0, datetime.now(timezone.utc))
    jobs["kalshi-shadow status (warehouse reads)"] = time.perf_counter() - t
    assert "error" not in st, st
    return {"steps": median, "launched_whole": launched, "jobs": jobs, "snapshot_rows_per_tick": statistics.median(rows)}


def scheduled_jobs(defs, instance, data_dir: Path, now: datetime) -> dict[str, float]:
    """Seconds of one run of each scheduled job (its run wall time), and of the settlements step's warehouse work
    for the contracts that closed in the ticks (its exchange reads replaced by the outcomes they would return)."""
    from kalshi_shadow.scoring.settlements import Observation, apply_observations, plan_reads, quote_dates_of, track_reads
    from kalshi_shadow.warehouse.connection import connect

    out = {}
    today = datetime.now(timezone.utc).date()
    for job, partition in (("health_job", None), ("scores_job", today.isoformat()), ("housekeeping_job", None),
                           ("digest_job", None), ("decision_replay_job", None),
                           ("daily_report_job", (today - timedelta(days=1)).isoformat())):
        t = time.perf_counter()
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition, raise_on_error=False)
        out[job] = time.perf_counter() - t
        if not result.success:
            out[job + " (FAILED)"] = 1.0
    conn = connect(data_dir / "warehouse.duckdb")
    try:
        t = time.perf_counter()
        due, _ = plan_reads(conn, now)
        outcomes = conn.execute("""SELECT c.ticker, avg(s.price::DOUBLE) > coalesce(c.floor_strike, 0) FROM kalshi_contracts AS c
                                   JOIN spot_ticks AS s ON s.ts > c.close_ts - INTERVAL 60 SECOND AND s.ts <= c.close_ts
                                   WHERE c.ticker IN (SELECT unnest(?::VARCHAR[])) GROUP BY c.ticker, c.floor_strike""", [due]).fetchall()
        observations = [Observation(tk, "finalized", "yes" if yes else "no", None, None, None) for tk, yes in outcomes]
        changed = apply_observations(conn, observations, now)
        track_reads(conn, due, observations, now)
        quote_dates_of(conn, changed)
        out[f"settlements_job warehouse work ({len(due)} contracts due)"] = time.perf_counter() - t
    finally:
        conn.close()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Storage and replay


def storage(data_dir: Path, days: int) -> dict:
    """Bytes of the warehouse per day of history, by table, and of one day's raw archive."""
    from kalshi_shadow.warehouse.connection import connect

    db = data_dir / "warehouse.duckdb"
    conn = connect(db)
    try:
        conn.execute("CHECKPOINT")
        block = conn.execute("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]
        tables = [r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables() WHERE NOT internal").fetchall()]
        by_table = {t: conn.execute(f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('{t}') WHERE persistent").fetchall()[0][0] * block
                    for t in tables}
        start = conn.execute("SELECT min(ts) FROM kalshi_quotes").fetchall()[0][0]
        arch = data_dir / "archive-sample"
        arch.mkdir(exist_ok=True)
        from kalshi_shadow.raw.schemas import RAW_SCHEMAS

        for table in ("spot_ticks", "kalshi_quotes", "kalshi_markets", "kalshi_series"):
            cols = ", ".join(RAW_SCHEMAS[table])
            for h in range(24):
                lo = start + timedelta(hours=h)
                conn.execute(f"COPY (SELECT {cols} FROM {table} WHERE ts >= ? AND ts < ?) TO '{arch}/{table}-{h:02d}.parquet' "
                             "(FORMAT parquet, COMPRESSION zstd)", [lo, lo + timedelta(hours=1)])
    finally:
        conn.close()
    archive_day = sum(p.stat().st_size for p in arch.glob("*.parquet"))
    return {"warehouse_bytes": db.stat().st_size, "per_day": db.stat().st_size / days, "by_table": by_table,
            "archive_bytes_per_day": archive_day}


def replay(data_dir: Path, budget: float) -> dict:
    """An edited `careful` set replays the whole history in slices of `budget` seconds, as the replay job would."""
    from kalshi_shadow.decisions.engine import decide
    from kalshi_shadow.decisions.rulesets import DEFAULT_RULES, load_rule_sets
    from kalshi_shadow.warehouse.connection import connect

    path = data_dir / "rules-edited.toml"
    path.write_text(DEFAULT_RULES.read_text().replace("min_ev = 0.03", "min_ev = 0.031", 1))
    edited = next(rs for rs in load_rule_sets(path) if rs.name == "careful")
    slices, t, rows = 0, time.perf_counter(), 0
    while True:
        conn = connect(data_dir / "warehouse.duckdb")
        try:
            run = decide(conn, edited, budget_seconds=budget)
        finally:
            conn.close()
        slices += 1
        rows += run.takes + run.skips_logged
        if run.caught_up or run.chunks == 0:
            break
    return {"seconds": time.perf_counter() - t, "slices": slices, "rows_logged": rows}


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "kalshi_shadow.bench_history", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench history child {args[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace, figure, note, section) -> None:
    end = (datetime.now(timezone.utc) - timedelta(minutes=20)).replace(second=0, microsecond=0)
    results = {}
    keep = Path(args.keep) if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    for days in args.days:
        section(f"history: {days} day(s) at {args.strikes} strikes, a quote every {args.quote_every} s")
        tmp = Path(tempfile.mkdtemp(prefix=f"kalshi-shadow-bench-history-{days}d-", dir=keep))
        common = ["--data-dir", str(tmp), "--days", str(days), "--strikes", str(args.strikes),
                  "--quote-every", str(args.quote_every), "--end", end.isoformat()]
        b = _child(["_build", *common])
        note(f"built in {b['build_seconds']:.0f} s (+ {b['decide_seconds']:.0f} s deciding {b['rule_sets']} rule sets from "
             f"scratch): {b['quotes']:,} quotes, {b['snapshots']:,} snapshot rows, {b['decisions']:,} decision rows "
             f"({b['takes']:,} takes), {b['contracts']:,} contracts, {b['ledger']:,} ledger rows")
        s = _child(["_storage", *common])
        r = _child(["_ticks", *common, "--ticks", str(args.ticks)])
        rp = _child(["_replay", *common, "--budget", str(args.budget)])
        results[days] = {"build": b, "storage": s, "ticks": r, "replay": rp, "dir": tmp}
        note(f"warehouse {s['warehouse_bytes'] / 2**30:.2f} GiB ({s['per_day'] / 2**20:,.0f} MiB per day); raw archive "
             f"{s['archive_bytes_per_day'] / 2**20:,.0f} MiB per day; biggest tables: "
             + ", ".join(f"{t} {b_ / 2**20:,.0f} MiB" for t, b_ in sorted(s["by_table"].items(), key=lambda x: -x[1])[:5]))
        note(f"a tick brings ~{r['snapshot_rows_per_tick']:,.0f} snapshot rows; replay of an edited set: "
             f"{rp['seconds']:.0f} s in {rp['slices']} slices of {args.budget:g} s ({rp['rows_logged']:,} rows)")
    short, long_ = min(results), max(results)
    section(f"per step, median of {args.ticks} ticks: {short} day(s) vs {long_} day(s) of history (seconds)")
    a, b = results[short]["ticks"], results[long_]["ticks"]
    for group in ("steps", "jobs"):
        for k in a[group]:
            x, y = a[group][k], b[group].get(k)
            ratio = f"{y / x:.2f}x" if y is not None and x > 0.005 else "-"
            note(f"{k:60s} {x:7.3f}  {y if y is None else round(y, 3):>7}  {ratio}")
    whole = "whole tick (run wall time)"
    wa, wb = a["steps"][whole], b["steps"][whole]
    figure(f"history tick {short} day(s)", f"{wa:.2f} s")
    figure(f"history tick {long_} day(s)", f"{wb:.2f} s", f"< {TARGET_TICK_S:g} s")
    figure(f"history tick ratio {long_}/{short} days", f"{wb / wa:.2f}x", f"<= {TARGET_RATIO}x")
    la, lb = a["launched_whole"], b["launched_whole"]
    figure("history tick as a launched run (each step opens the file)",
           f"{la:.2f} s on {short} day(s), {lb:.2f} s on {long_} day(s): {lb / la:.2f}x")
    for days, res in sorted(results.items()):
        st = res["storage"]
        total = st["warehouse_bytes"] + days * st["archive_bytes_per_day"]
        figure(f"history storage {days} day(s)", f"{total / 2**30:.2f} GiB ({st['per_day'] / 2**20:,.0f} MiB/day warehouse + "
               f"{st['archive_bytes_per_day'] / 2**20:,.0f} MiB/day raw archive)",
               f"<= {TARGET_STORAGE_GIB} GiB for 30 days" if days == long_ else "")
        rp = res["replay"]
        figure(f"history replay of an edited rule set, {days} day(s)",
               f"{rp['seconds']:.0f} s = {rp['seconds'] / days:.1f} s per day of history ({rp['slices']} slices of {args.budget:g} s)")
    if args.live_minutes > 0:
        live_during_replay(results[long_]["dir"], args, figure, note, section)


def live_during_replay(data_dir: Path, args, figure, note, section) -> None:
    """`up --fast-clock` on the long history with an edited rules file: the new version replays in the replay job
    while the live runs go on; the live lag of the window and how far the replay got."""
    from kalshi_shadow.bench import DROP_ENV, _lag, _sleep_watching, _stop_up, _wait_for
    from kalshi_shadow.supervisor import free_ports

    section(f"live on the {args.days[-1]}-day history while an edited rule set replays ({args.live_minutes:g} min)")
    run_dir = data_dir / "run"
    dagster_port, kalshi_port, coinbase_port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env.update(KALSHI_SHADOW_DATA_DIR=str(data_dir), KALSHI_SHADOW_RULES=str(data_dir / "rules-live.toml"))
    from kalshi_shadow.decisions.rulesets import DEFAULT_RULES

    (data_dir / "rules-live.toml").write_text(DEFAULT_RULES.read_text().replace("min_ev = 0.03", "min_ev = 0.032", 1))
    out = open(data_dir / "up.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kalshi_shadow.cli", "up", "--sim", "--fast-clock", "--data-dir", str(data_dir),
                             "--dagster-port", str(dagster_port), "--kalshi-port", str(kalshi_port), "--coinbase-port", str(coinbase_port)],
                            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    t0 = datetime.now(timezone.utc)
    done_at = None
    try:
        _wait_for(run_dir / "up.json", proc, timeout=600)
        end = time.monotonic() + args.live_minutes * 60

        def poll() -> None:
            nonlocal done_at
            if done_at is None and _replay_done(data_dir):
                done_at = datetime.now(timezone.utc)

        while time.monotonic() < end:
            _sleep_watching(min(30, end - time.monotonic()), proc, 5.0)
            poll()
    finally:
        t1 = datetime.now(timezone.utc)
        _stop_up(proc, run_dir)
        out.close()
    lag = _lag(data_dir / "warehouse.duckdb", t0 + timedelta(minutes=2), t1)
    progress = _replay_state(data_dir)
    note(f"edited version: {progress}")
    figure("history live lag p95 while replaying", f"{lag['p95']:.1f} s (p50 {lag['p50']:.1f}, {lag['rows']:,} rows)"
           if lag["rows"] else "no snapshots", "<= 45 s")
    figure("history replay of an edited rule set under up", f"caught up in {(done_at - t0).total_seconds() / 60:.1f} min"
           if done_at else f"not caught up in {args.live_minutes:g} min ({progress})")


def _replay_state(data_dir: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "kalshi_shadow.cli", "status", "--json", "--lock-timeout", "20"],
                          env={**os.environ, "KALSHI_SHADOW_DATA_DIR": str(data_dir)}, capture_output=True, text=True)
    try:
        versions = json.loads(proc.stdout)["warehouse"]["decisions"]["versions"]
    except (ValueError, KeyError, TypeError):
        return "unknown (status unreadable)"
    return ", ".join(f"{v}: {'replaying ' + format(d['replay_progress'] or 0, '.0%') if d['replaying'] else 'live'}"
                     for v, d in versions.items() if d["in_rules_file"])


def _replay_done(data_dir: Path) -> bool:
    state = _replay_state(data_dir)
    return "replaying" not in state and "unknown" not in state


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kalshi-shadow bench history _child")
    ap.add_argument("section")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--days", type=int, required=True)
    ap.add_argument("--strikes", type=int, default=50)
    ap.add_argument("--quote-every", type=int, default=5)
    ap.add_argument("--end", required=True)
    ap.add_argument("--ticks", type=int, default=3)
    ap.add_argument("--first-tick", type=int, default=0)
    ap.add_argument("--budget", type=float, default=8.0)
    a = ap.parse_args(argv)
    end = datetime.fromisoformat(a.end)
    a.data_dir.mkdir(parents=True, exist_ok=True)
    if a.section == "_build":
        out = build(a.data_dir, a.days, a.strikes, a.quote_every, end)
    elif a.section == "_storage":
        out = storage(a.data_dir, a.days)
    elif a.section == "_ticks":
        out = ticks(a.data_dir, a.days, a.strikes, a.quote_every, end, a.ticks, a.first_tick)
    elif a.section == "_replay":
        out = replay(a.data_dir, a.budget)
    else:
        raise SystemExit(f"unknown section {a.section}")
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Each rule set version's running state, stored so that a tick costs what is new, not the length of history.

`kalshi_decision_state` holds, per version, its frontier (every snapshot seen at or before it is decided), its cash
and open exposure at that frontier, and whether it is replaying history. `kalshi_decision_positions` holds one row
per take: what the stateful rules read (positions, per-event and per-day caps, cool-downs) and each payout as first
read from the exchange. Both are written in the same transaction as the log rows of a chunk, so they never disagree
with the log; an asset check recomputes cash from the positions.

**Where decisions may go.** Up to the *decision target*: the pricing frontier (every quote seen by then is
priced), held back by the quotes table's own file sequence (a quote file not yet loaded may hold quotes seen
before the pricing frontier, which would then be priced behind the decisions and never decided).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from kalshi_shadow.pricing.snapshots import NEG_INF, STATE_FRONTIER
from kalshi_shadow.warehouse.frontier import FRONTIER_SQL


@dataclass
class VersionState:
    version: str
    rule_set: str
    model: str
    bankroll: float
    frontier: datetime | None        # None: nothing decided yet (a new version starts at the start of history)
    cash: float
    exposure: float
    replaying: bool
    replay_from: datetime | None = None
    replay_started_at: datetime | None = None
    in_rules_file: bool = True   # the platform's rules file holds it (else it has stopped deciding: retired)

    def progress(self, target: datetime | None) -> float | None:
        """Share of the replay done, 0..1 (None when not replaying or nothing to measure against)."""
        if not self.replaying or target is None or self.replay_from is None or self.frontier is None:
            return None if not self.replaying else 0.0
        span = (target - self.replay_from).total_seconds()
        return 1.0 if span <= 0 else max(0.0, min(1.0, (self.frontier - self.replay_from).total_seconds() / span))


COLUMNS = ("rule_set_version, rule_set, model_version, bankroll, frontier_ts, cash, open_exposure, replaying, "
           "replay_from_ts, replay_started_at, in_rules_file")


def load(conn: duckdb.DuckDBPyConnection, version: str) -> VersionState | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM kalshi_decision_state WHERE rule_set_version = ?", [version]).fetchall()
    return VersionState(*row[0]) if row else None


def load_all(conn: duckdb.DuckDBPyConnection) -> list[VersionState]:
    return [VersionState(*r) for r in conn.execute(f"SELECT {COLUMNS} FROM kalshi_decision_state ORDER BY 1").fetchall()]


def save(conn: duckdb.DuckDBPyConnection, st: VersionState) -> None:
    conn.execute(f"""INSERT OR REPLACE INTO kalshi_decision_state ({COLUMNS}, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())""",
                 [st.version, st.rule_set, st.model, st.bankroll, st.frontier, st.cash, st.exposure, st.replaying,
                  st.replay_from, st.replay_started_at, st.in_rules_file])


def mark_rules_file(conn: duckdb.DuckDBPyConnection, versions: list[str]) -> None:
    """Record which versions the rules file in use holds (every run of the decisions asset calls this)."""
    conn.execute("UPDATE kalshi_decision_state SET in_rules_file = list_contains(?::VARCHAR[], rule_set_version) "
                 "WHERE in_rules_file IS DISTINCT FROM list_contains(?::VARCHAR[], rule_set_version)", [versions, versions])


def register(conn: duckdb.DuckDBPyConnection, version: str, rule_set: str, model: str, bankroll: float) -> VersionState:
    """The state of a version seen for the first time: nothing decided, to be replayed from the start of history."""
    st = VersionState(version, rule_set, model, bankroll, None, bankroll, 0.0, True,
                      replay_started_at=datetime.now(timezone.utc))
    save(conn, st)
    return st


def target(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """How far decisions may go (see the module docstring); None while nothing is priced."""
    row = conn.execute("SELECT value FROM asset_watermarks WHERE asset = ?", [STATE_FRONTIER]).fetchall()
    if not row:
        return None
    priced = datetime.fromtimestamp(row[0][0] / 1e6, tz=timezone.utc)
    writers = conn.execute("SELECT count(*) FROM raw_writer_progress WHERE table_name = 'kalshi_quotes'").fetchall()[0][0]
    if not writers:  # quotes that never came through raw files (the synthetic history): pricing alone bounds
        return priced
    quotes = conn.execute(FRONTIER_SQL, ["kalshi_quotes"]).fetchall()[0][0]
    if quotes is None or quotes == datetime.min:  # the first quote file is missing
        return NEG_INF
    return min(priced, quotes)


def seconds_behind(conn: duckdb.DuckDBPyConnection, *, replaying: bool | None = False) -> dict[str, float]:
    """How far each version of the rules file in use trails the decision target, in seconds (inf: nothing decided
    yet). By default only versions on the live path (a replaying one is behind by design); `replaying=None`: all."""
    t = target(conn)
    if t is None:
        return {}
    out = {}
    for st in load_all(conn):
        if not st.in_rules_file or (replaying is not None and st.replaying != replaying):
            continue
        out[st.version] = float("inf") if st.frontier is None else max(0.0, (t - st.frontier).total_seconds())
    return out

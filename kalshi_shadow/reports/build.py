"""Assemble a report from `ReportData`: sections of tables and charts, written as HTML (PNGs next to index.html),
as Dagster markdown metadata (headline tables, charts embedded as data: URIs), and as terminal text.

A section with nothing to show says why ("no data", "pending settlement") instead of printing zeros.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from kalshi_shadow.reports import charts, stats
from kalshi_shadow.reports.data import EV_EDGES, GAP_SECONDS, HORIZONS, N_BINS, Period, ReportData


@dataclass
class Block:
    kind: str                       # table | chart | text
    caption: str = ""
    table: pl.DataFrame | None = None
    png: bytes | None = None
    name: str = ""                  # chart file name


@dataclass
class Section:
    title: str
    status: str | None = None       # None, or why there is nothing to show
    blocks: list[Block] = field(default_factory=list)

    def table(self, caption: str, frame: pl.DataFrame) -> None:
        self.blocks.append(Block("table", caption, table=frame))

    def chart(self, caption: str, name: str, png: bytes) -> None:
        self.blocks.append(Block("chart", caption, png=png, name=name))

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", text))


@dataclass
class Report:
    period: Period
    sections: list[Section]
    headline: dict[str, pl.DataFrame]           # caption -> table, for metadata and the terminal
    headline_charts: list[str]                  # chart names to embed in metadata
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def charts(self) -> dict[str, bytes]:
        return {b.name: b.png for s in self.sections for b in s.blocks if b.kind == "chart"}


# ---- helpers --------------------------------------------------------------------------------------------------
def _ci(i: stats.Interval, digits: int = 4) -> str:
    if i is None or not math.isfinite(i.estimate):
        return "—"
    if not (math.isfinite(i.lo) and math.isfinite(i.hi)):
        return f"{i.estimate:.{digits}f}"
    return f"{i.estimate:.{digits}f} [{i.lo:.{digits}f}, {i.hi:.{digits}f}]"


def verdict(i: stats.Interval) -> str:
    """Whether a model beats the mid, in words: only where the event-clustered interval of its skill excludes zero."""
    if i is None or not (math.isfinite(i.lo) and math.isfinite(i.hi)):
        return "too few events"
    return "beats the mid" if i.lo > 0 else "worse than the mid" if i.hi < 0 else "no detectable difference"


def _events(frame: pl.DataFrame, keys: list[str], values: list[str]) -> pl.DataFrame:
    return frame.group_by(keys + ["event"]).agg([pl.col(v).sum() for v in values])


def _bucket_label(b: int) -> str:
    lo = EV_EDGES[b - 1] if b > 0 else None
    hi = EV_EDGES[b] if b < len(EV_EDGES) else None
    if lo is None:
        return f"≤ {hi:+.2f}"
    if hi is None:
        return f"> {lo:+.2f}"
    return f"({lo:+.2f}, {hi:+.2f}]"


def _pct(a, b) -> float | None:
    return None if not b else round(100.0 * a / b, 1)


# ---- sections -------------------------------------------------------------------------------------------------
def coverage(d: ReportData) -> Section:
    s = Section("1. Coverage")
    f = d.frames
    feeds = f["feeds"]
    period_hours = d.period.days * 24.0
    if feeds["rows"].sum() == 0:
        s.status = "no data: no spot tick and no quote in this period"
        return s
    s.table(f"Hours of data (minutes with at least one row, of {period_hours:g} h in the period)",
            feeds.select(pl.col("feed"), pl.col("rows"), pl.col("hours").round(2).alias("hours of data"),
                         (pl.col("hours") / period_hours * 100).round(1).alias("% of period"),
                         pl.col("first"), pl.col("last")))
    gaps = f["gaps"]
    if gaps.height:
        s.table(f"Gaps: silences longer than {GAP_SECONDS} s (incl. before the first and after the last row)",
                gaps.select("feed", "gap_start", "gap_end", (pl.col("seconds") / 60).round(1).alias("minutes")))
    else:
        s.text(f"No gap longer than {GAP_SECONDS} s in either feed.")
    cs = f["coverage_series"]
    if cs.height:
        s.table("Per series and model: contracts seen, settled vs pending, quotes, snapshots, share priceable",
                cs.select("series", "model", "contracts_seen", "settled", pl.col("pending_closed").alias("pending (closed)"),
                          pl.col("pending_open").alias("pending (open)"), "quotes", "snapshots",
                          (pl.col("priceable") / pl.col("snapshots") * 100).round(1).alias("% priceable"),
                          (pl.col("tradable") / pl.col("snapshots") * 100).round(1).alias("% passing filters"),
                          "scored", pl.col("paired").alias("paired scored")))
    else:
        s.text("No snapshots priced in this period.")
    return s


def _pending_note(d: ReportData) -> tuple[int, int]:
    cs = d.frames["coverage_series"]
    return (int(cs["snapshots"].sum()) if cs.height else 0, int(cs["scored"].sum()) if cs.height else 0)


def calibration(d: ReportData, headline: dict) -> Section:
    s = Section("2. Calibration (paired rows: model priced and book two-sided)")
    cal, rel = d.frames["calibration"], d.frames["reliability"]
    snaps, scored = _pending_note(d)
    if cal.height == 0:
        s.status = ("no data: no snapshot in this period" if snaps == 0 else
                    f"pending settlement: {snaps} snapshots, none of a settled contract with a two-sided book yet")
        return s
    if scored < snaps:
        s.text(f"{snaps - scored} of {snaps} snapshots are of contracts not settled yet and are not in these figures.")
    vals = ["n", "brier_model", "brier_mid", "logloss_model", "logloss_mid"]

    def table(keys: list[str]) -> pl.DataFrame:
        ev = _events(cal, keys, vals).sort(keys + ["event"])
        rows = []
        for key, g in ev.group_by(keys, maintain_order=True):
            n = g["n"].sum()
            bss = stats.skill_score(g["brier_model"].to_numpy(), g["brier_mid"].to_numpy())
            rows.append({**dict(zip(keys, key)), "paired rows": int(n), "events": g.height,
                         "Brier model": g["brier_model"].sum() / n, "Brier mid": g["brier_mid"].sum() / n,
                         "BSS vs mid [95% CI, events]": _ci(bss), "verdict": verdict(bss), "_bss": bss.estimate,
                         "log loss model": g["logloss_model"].sum() / n, "log loss mid": g["logloss_mid"].sum() / n})
        return pl.DataFrame(rows).sort(keys)

    head = table(["model"]).sort("_bss", descending=True, nulls_last=True).drop("_bss")  # ranked: best skill first
    headline["Calibration on paired rows"] = head
    s.table("Brier score, log loss and Brier skill score against the mid, per model, ranked (CI: bootstrap over whole "
            "events; a model beats the mid only where the interval is above zero)", head)
    s.text(" ".join(f"{r['model']}: {r['verdict']} ({r['paired rows']} paired rows, {r['events']} events)."
                    for r in head.iter_rows(named=True)))
    by = table(["model", "series", "horizon"]).drop("_bss").with_columns(
        pl.col("horizon").replace_strict({h: i for i, h in enumerate(HORIZONS)}, return_dtype=pl.Int32).alias("_h")
    ).sort(["model", "series", "_h"]).drop("_h")
    s.table("Per series and time to close", by)
    wins = by.filter(pl.col("verdict") == "beats the mid")
    s.text("Where a model beats the mid (interval above zero): " + ("; ".join(
        f"{r['model']} on {r['series']} {r['horizon']}" for r in wins.iter_rows(named=True)) if wins.height else
        "nowhere in this period."))

    curves, rel_rows, dec_rows = {}, [], []
    for (name,), g in rel.group_by(["forecaster"], maintain_order=True):
        r = stats.reliability(g["event"].to_numpy(), g["bin"].to_numpy(), g["n"].to_numpy(), g["sum_p"].to_numpy(),
                              g["sum_y"].to_numpy(), N_BINS)
        curves[name] = {"bins": r.bins, "mean_p": r.mean_p, "observed": r.observed, "lo": r.lo, "hi": r.hi, "n": r.n}
        for b, n, p, o, lo, hi in zip(r.bins, r.n, r.mean_p, r.observed, r.lo, r.hi):
            rel_rows.append({"forecaster": name, "bin": f"[{b / N_BINS:.1f}, {(b + 1) / N_BINS:.1f})", "rows": int(n),
                             "mean forecast": p, "observed": o, "band lo": lo, "band hi": hi})
        per_bin = g.group_by("bin").agg(pl.col("n").sum(), pl.col("sum_p").sum(), pl.col("sum_y").sum())
        dec = stats.decompose(g["sum_brier"].sum() / g["n"].sum(), per_bin["n"].to_numpy(), per_bin["sum_p"].to_numpy(),
                              per_bin["sum_y"].to_numpy())
        dec_rows.append({"forecaster": name, "rows": int(g["n"].sum()), "Brier": dec.brier, "reliability (−)": dec.reliability,
                         "resolution (+)": dec.resolution, "uncertainty": dec.uncertainty, "within-bin residual": dec.residual})
    order = sorted(curves, key=lambda k: (k == "market mid", k))
    curves = {k: curves[k] for k in order}
    s.chart("Reliability diagram: forecast vs observed frequency per bin, 95% bands from resampling events; rows per bin below. "
            "The mid is shown on the champion's paired rows.", "reliability.png", charts.reliability_diagram(curves, N_BINS))
    s.table("Reliability table", pl.DataFrame(rel_rows))
    s.table("Brier decomposition (Murphy, 10 bins): Brier = reliability − resolution + uncertainty + within-bin residual",
            pl.DataFrame(dec_rows))
    return s


def edge(d: ReportData) -> Section:
    s = Section("3. Edge quality: each side at the ask, predicted EV vs realised PnL")
    e = d.frames["edge"]
    snaps, _ = _pending_note(d)
    if e.height == 0:
        s.status = "no data: no snapshot in this period" if snaps == 0 else "pending settlement: no priced snapshot of a settled contract yet"
        return s
    rows, panels = [], {}
    for (model,), g in e.group_by(["model"], maintain_order=True):
        panel = {"ev": [], "pnl": [], "lo": [], "hi": [], "n": []}
        for (b,), gb in g.group_by(["bucket"], maintain_order=True):
            ci = stats.clustered_mean(gb["sum_pnl"].to_numpy(), gb["n"].to_numpy())
            n = int(gb["n"].sum())
            ev = gb["sum_ev"].sum() / n
            rows.append({"model": model, "_b": b, "predicted EV bucket": _bucket_label(b), "rows": n, "events": gb.height,
                         "mean predicted EV": ev, "realised PnL [95% CI, events]": _ci(ci),
                         "passing filters": int(gb["n_tradable"].sum())})
            for k, v in (("ev", ev), ("pnl", ci.estimate), ("lo", ci.lo), ("hi", ci.hi), ("n", n)):
                panel[k].append(v)
        order = np.argsort(panel["ev"])
        panels[model] = {k: np.asarray(v)[order] for k, v in panel.items()}
    s.text("Every priced snapshot of a settled, non-void contract, each side with an ask: what taking it would have "
           "returned per contract net of the fee, against what the model predicted. More predicted edge should mean more realised edge.")
    s.table("Per predicted-EV bucket", pl.DataFrame(rows).sort(["model", "_b"]).drop("_b"))
    s.chart("Realised vs predicted PnL per contract (95% CI clustered by event; labels: rows)", "edge_quality.png",
            charts.edge_quality(panels))
    return s


def decisions(d: ReportData, headline: dict) -> Section:
    s = Section("3b. Would-trade log per rule set")
    takes, skips, bank = d.frames["takes"], d.frames["skips"], d.frames["bankroll"]
    if takes.height == 0 and skips.height == 0:
        s.status = "no data: no decision logged in this period"
        return s
    rows, cum, eq = [], {}, {}
    for (rs, version), g in takes.group_by(["rule_set", "version"], maintain_order=True):
        settled = g.filter(pl.col("realised_pnl").is_not_null())
        n_set = settled.height
        row = {"rule set": version, "takes": g.height, "settled": n_set, "pending": g.height - n_set}
        if n_set:
            ev = settled.group_by("event").agg(pl.col("realised_pnl").sum(), pl.col("contracts").sum(), pl.col("predicted_ev").sum())
            real = stats.clustered_mean(ev["realised_pnl"].to_numpy(), ev["contracts"].to_numpy())
            excess = stats.clustered_mean((ev["realised_pnl"] - ev["predicted_ev"]).to_numpy(), ev["contracts"].to_numpy())
            row.update({"hit rate %": round(100.0 * (settled["realised_pnl"] > 0).sum() / n_set, 1),
                        "contracts": int(settled["contracts"].sum()), "cost $": round(settled["cost"].sum(), 2),
                        "predicted EV $": round(settled["predicted_ev"].sum(), 2),
                        "realised PnL $": round(settled["realised_pnl"].sum(), 2),
                        "predicted EV / contract": settled["predicted_ev"].sum() / settled["contracts"].sum(),
                        "realised / contract [95% CI, events]": _ci(real),
                        "realised − predicted / contract [CI]": _ci(excess)})
            o = settled.sort("settled_ts")
            cum[version] = {"t": o["settled_ts"].to_list(), "realised": np.cumsum(o["realised_pnl"].to_numpy()),
                            "predicted": np.cumsum(o["predicted_ev"].to_numpy())}
        else:
            row["hit rate %"] = "pending settlement"
        b = bank.filter(pl.col("version") == version)
        if b.height:
            row.update({"cash at end $": round(b["cash"][-1], 2), "equity at end $": round(b["equity_at_cost"][-1], 2),
                        "max drawdown $": round(b["drawdown"].min(), 2)})
            eq[version] = {"t": b["ts"].to_list(), "equity": b["equity_at_cost"].to_numpy(), "drawdown": b["drawdown"].to_numpy()}
        rows.append(row)
    if rows:
        table = pl.DataFrame(rows, infer_schema_length=None)
        headline["Would-trade rule sets"] = table.select([c for c in table.columns if c in (
            "rule set", "takes", "settled", "hit rate %", "predicted EV $", "realised PnL $", "realised / contract [95% CI, events]",
            "equity at end $", "max drawdown $")])
        s.table("Takes decided in the period: hit rate, realised PnL against predicted EV (CIs clustered by event), bankroll", table)
    else:
        s.text("No take in this period (skips below).")
    if cum or eq:
        s.chart("Cumulative realised PnL vs predicted EV, equity and drawdown", "pnl_bankroll.png", charts.pnl_and_bankroll(cum, eq))
    if skips.height:
        s.table("Skips logged, by reason (a skip is logged when a contract's reason changes)",
                skips.select(pl.col("version").alias("rule set"), "reason", "logged"))
    return s


def drift(d: ReportData) -> Section:
    s = Section("4. Drift: model minus mid")
    dr, dis = d.frames["drift"], d.frames["disagreements"]
    if dr.height == 0:
        s.status = "no data: no snapshot with both a model price and a mid in this period"
        return s
    panels = {}
    for (model,), g in dr.group_by(["model"], maintain_order=True):
        panels[model] = {h: {"t": gh["bucket"].to_list(), "mean_diff": gh["mean_diff"].to_numpy()}
                         for h in HORIZONS if (gh := g.filter(pl.col("horizon") == h)).height}
    unit = "hour" if d.period.kind == "daily" else "6 hours"
    s.chart(f"Mean model minus mid per {unit}, by time to close", "drift.png", charts.drift(panels))
    summary = dr.group_by(["model", "horizon"]).agg(
        pl.col("n").sum().alias("paired snapshots"),
        ((pl.col("mean_diff") * pl.col("n")).sum() / pl.col("n").sum()).alias("mean model − mid"),
        ((pl.col("mean_abs_diff") * pl.col("n")).sum() / pl.col("n").sum()).alias("mean |model − mid|"),
        pl.col("mean_diff").min().alias(f"lowest {unit} mean"), pl.col("mean_diff").max().alias(f"highest {unit} mean"),
    ).with_columns(pl.col("horizon").replace_strict({h: i for i, h in enumerate(HORIZONS)}, return_dtype=pl.Int32).alias("_h"))
    s.table("Per model and time to close", summary.sort(["model", "_h"]).drop("_h"))
    s.table("Where model and market disagree most (closer: whose probability was nearer the outcome)",
            dis.with_columns(pl.col("outcome").fill_null("pending"), pl.col("closer").fill_null("—")))
    return s


def settlement_index(d: ReportData, headline: dict) -> Section:
    """Which index priced the period, each venue's basis to the proxy, the proxy's to the official index (when keyed),
    and whose 60-s mean gave the exchange's result."""
    s = Section("5. Settlement index: venues, proxy, the official index and the exchange's value")
    src, basis, settle = d.frames["index_sources"], d.frames["index_basis"], d.frames["index_settlement"]
    official = d.frames["index_official_basis"]
    if src.height == 0:
        s.status = "no data: the index grid has no second in this period"
        return s
    total = src["seconds"].sum()
    s.table("Seconds of the index grid by source (official: Kalshi's cfbenchmarks_value feed, fresh; proxy: 2+ venues; "
            "a venue's name: index_degraded; none: no fresh source)",
            src.with_columns((pl.col("seconds") / total * 100).round(2).alias("% of seconds")))
    s.table("Each venue against the proxy, per UTC day (basis in bp, over seconds the venue was in a quorum proxy)",
            basis.select("day", "venue", "seconds_fresh", "seconds_excluded", pl.col("mean_bp").round(2).alias("mean basis bp"),
                         pl.col("sd_bp").round(2).alias("sd bp"), pl.col("p95_abs_bp").round(2).alias("p95 |basis| bp")))
    if official.height == 0:
        s.text("The official index was not recorded in this period (it needs Kalshi credentials: `cfbenchmarks_value`); "
               "the proxy priced every second it could.")
    else:
        s.table("The proxy against the official index, per UTC day (basis in bp = proxy / official − 1, over seconds with "
                "both and a quorum proxy)",
                official.select("day", pl.col("seconds_official").alias("seconds recorded"), pl.col("seconds_both").alias("seconds paired"),
                                pl.col("mean_bp").round(2).alias("mean basis bp"), pl.col("sd_bp").round(2).alias("sd bp"),
                                pl.col("p95_abs_bp").round(2).alias("p95 |basis| bp"),
                                pl.col("mean_abs_usd").round(2).alias("mean |proxy − official| $")))
    if settle.height == 0:
        s.text("No settled contract in this period with every source's 60 seconds before close: no settlement check yet.")
        return s
    table = settle.select(pl.col("source").alias("60-s mean of"), "contracts",
                          pl.col("same_result").alias("gave the exchange's result"),
                          (pl.col("same_result") / pl.col("contracts") * 100).round(2).alias("% same result"),
                          pl.col("mae").round(4).alias("mean |error| $"), pl.col("max_error").round(2).alias("max |error| $"))
    headline["Settlement index"] = table
    s.table("Settled contracts with all 60 seconds from every source (paired): the result each source's mean (rounded to "
            "the cent) implies, and its error against the exchange's expiration value", table)
    by = {r["source"]: r for r in settle.iter_rows(named=True)}
    if "proxy" in by and "coinbase" in by:
        p, c = by["proxy"], by["coinbase"]
        better = "below" if p["mae"] < c["mae"] else "not below"
        s.text(f"The proxy's mean error (${p['mae']:.4f}) is {better} Coinbase alone's (${c['mae']:.4f}) on the same "
               f"{p['contracts']} contracts; it gave the exchange's result on {p['same_result']}, Coinbase on {c['same_result']}.")
    if "official" in by and "proxy" in by:
        o, p = by["official"], by["proxy"]
        s.text(f"On the {o['contracts']} contracts with the official index recorded throughout, its 60-s mean gave the "
               f"exchange's result on {o['same_result']} (mean error ${o['mae']:.4f}); the proxy's would have on "
               f"{p['same_result']} (${p['mae']:.4f}).")
    return s


def weekly_trend(d: ReportData, headline: dict) -> Section:
    s = Section("6. Week: the seven days and the trend over weeks")
    dt, wt = d.daily_trend, d.weekly_trend
    if dt is None or dt.height == 0:
        s.status = "no data: nothing scored or decided in this week yet"
        return s

    def pivot(frame: pl.DataFrame, label: str) -> pl.DataFrame:
        sc = frame.filter(pl.col("kind") == "score").select(
            pl.col("period").alias(label), pl.col("name").alias("model"), pl.col("n").alias("paired rows"),
            pl.col("a").alias("Brier model"), pl.col("b").alias("Brier mid"), pl.col("c").alias("BSS vs mid"))
        return sc

    def takes(frame: pl.DataFrame, label: str) -> pl.DataFrame:
        return frame.filter(pl.col("kind") == "takes").select(
            pl.col("period").alias(label), pl.col("name").alias("rule set version"), pl.col("n").alias("takes"),
            pl.col("d").cast(pl.Int64).alias("settled"), pl.col("a").round(2).alias("realised PnL $"))

    days = pivot(dt, "day")
    s.table("Per day: calibration on paired rows", days)
    s.table("Per day: takes and realised PnL", takes(dt, "day"))
    weeks = pivot(wt, "week")
    headline["Weekly trend"] = weeks
    s.table("Per ISO week (up to 12 weeks back): calibration on paired rows", weeks)
    s.table("Per ISO week: takes and realised PnL", takes(wt, "week"))
    series = {}
    for (model,), g in days.group_by(["model"], maintain_order=True):
        series[f"{model} model"] = {"t": g["day"].to_list(), "y": g["Brier model"].to_numpy()}
    mid = days.group_by("day", maintain_order=True).agg(pl.col("Brier mid").first())
    series["market mid"] = {"t": mid["day"].to_list(), "y": mid["Brier mid"].to_numpy()}
    s.chart("Brier score per day (paired rows; lower is better)", "trend_daily_brier.png",
            charts.trend(series, "Brier score per day, paired rows", "Brier"))
    tk = takes(dt, "day")
    if tk.height:
        pnl = {rs: {"t": g["day"].to_list(), "y": g["realised PnL $"].to_numpy()} for (rs,), g in tk.group_by(["rule set version"], maintain_order=True)}
        s.chart("Realised PnL per day of decision", "trend_daily_pnl.png",
                charts.trend(pnl, "Realised PnL of takes, per day decided", "$", zero_line=True))
    if weeks["week"].n_unique() > 1:
        bss = {m: {"t": g["week"].to_list(), "y": g["BSS vs mid"].to_numpy()} for (m,), g in weeks.group_by(["model"], maintain_order=True)}
        s.chart("Brier skill score vs mid per week", "trend_weekly_bss.png",
                charts.trend(bss, "Brier skill score vs mid, per ISO week", "BSS", zero_line=True))
    else:
        s.text("Only one week of history: the weekly trend starts next week.")
    return s


def build(d: ReportData) -> Report:
    headline: dict[str, pl.DataFrame] = {}
    cov = coverage(d)
    feeds = d.frames["feeds"]
    if feeds["rows"].sum():
        headline["Coverage"] = feeds.select("feed", "rows", pl.col("hours").round(2).alias("hours of data"))
    sections = [cov, calibration(d, headline), edge(d), decisions(d, headline), drift(d), settlement_index(d, headline)]
    if d.period.kind == "weekly":
        sections.append(weekly_trend(d, headline))
    return Report(d.period, sections, headline, ["reliability.png", "pnl_bankroll.png"])


# ---- output -------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:.4f}" if abs(v) < 1 else f"{v:,.2f}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def _rows(frame: pl.DataFrame) -> list[list[str]]:
    return [[_fmt(v) for v in r] for r in frame.iter_rows()]


def markdown_table(frame: pl.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "\n".join("| " + " | ".join(r) + " |" for r in _rows(frame))


def text_table(frame: pl.DataFrame) -> str:
    rows = [list(frame.columns)] + _rows(frame)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def headline_text(report: Report) -> str:
    parts = [f"{report.period.kind} report {report.period.label}"]
    for s in report.sections:
        if s.status:
            parts.append(f"{s.title}: {s.status}")
    for caption, t in report.headline.items():
        parts.append(f"\n{caption}\n{text_table(t)}")
    return "\n".join(parts)


def metadata_markdown(report: Report) -> str:
    """Headline tables and the headline charts (PNG as data: URIs), for the asset's Dagster metadata."""
    out = [f"## {report.period.kind.capitalize()} report {report.period.label}"]
    out += [f"- **{s.title}**: {s.status}" for s in report.sections if s.status]
    for caption, t in report.headline.items():
        out.append(f"### {caption}\n\n{markdown_table(t)}")
    pngs = report.charts()
    for name in report.headline_charts:
        if name in pngs:
            out.append(f"![{name}](data:image/png;base64,{base64.b64encode(pngs[name]).decode()})")
    return "\n\n".join(out)


CSS = """body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.status{background:#fff4d6;padding:8px 12px;border-left:4px solid #e0a800}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0 1.5em}.caption{color:#555;font-size:13px;margin:0.2em 0}"""


def write_html(report: Report, out_dir: Path) -> Path:
    """index.html plus one PNG per chart in out_dir (replaced atomically file by file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    body = [f"<h1>Kalshi shadow: {report.period.kind} report {esc(report.period.label)}</h1>",
            f"<p class='caption'>UTC days {report.period.start} to {report.period.end} (exclusive); generated "
            f"{report.generated_at:%Y-%m-%d %H:%M} UTC. Model vs mid only on paired rows, with their counts.</p>"]
    for s in report.sections:
        body.append(f"<h2>{esc(s.title)}</h2>")
        if s.status:
            body.append(f"<p class='status'>{esc(s.status)}</p>")
        for b in s.blocks:
            if b.kind == "text":
                body.append(f"<p>{esc(b.caption)}</p>")
            elif b.kind == "table":
                body.append(f"<p class='caption'>{esc(b.caption)}</p><table><tr>"
                            + "".join(f"<th>{esc(c)}</th>" for c in b.table.columns) + "</tr>"
                            + "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in _rows(b.table))
                            + "</table>")
            else:
                tmp = out_dir / f".{b.name}.tmp"
                tmp.write_bytes(b.png)
                tmp.replace(out_dir / b.name)
                body.append(f"<p class='caption'>{esc(b.caption)}</p><img src='{esc(b.name)}' alt='{esc(b.caption)}'>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(report.period.label)} report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>")
    (out_dir / "headline.txt").write_text(headline_text(report) + "\n")
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text(page)
    tmp.replace(out_dir / "index.html")
    return out_dir / "index.html"


def report_dir(data_dir: Path, period: Period) -> Path:
    return Path(data_dir) / "reports" / period.kind / period.label

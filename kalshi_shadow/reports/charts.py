"""PNG charts with matplotlib's Agg backend (no display): each function returns PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"market mid": "#444444"}
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]


def _color(name: str, i: int) -> str:
    return COLORS.get(name, PALETTE[i % len(PALETTE)])


def _png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def reliability_diagram(curves: dict[str, dict], n_bins: int) -> bytes:
    """curves: forecaster -> {mean_p, observed, lo, hi, n} arrays. Diagonal, points with 95% event-bootstrap bands,
    and the rows per bin below."""
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(7, 7.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfectly calibrated")
    width = 1.0 / n_bins / (len(curves) + 1)
    for i, (name, c) in enumerate(curves.items()):
        col = _color(name, i)
        ax.fill_between(c["mean_p"], c["lo"], c["hi"], color=col, alpha=0.15, lw=0)
        ax.plot(c["mean_p"], c["observed"], marker="o", ms=4, color=col, label=name)
        axn.bar(np.asarray(c["bins"]) / n_bins + (i + 0.5) * width, c["n"], width=width, color=col, align="edge")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency of YES")
    ax.set_title("Reliability on paired rows (bands: 95%, resampling events)")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    axn.set_xlabel("forecast P(YES)")
    axn.set_ylabel("rows")
    axn.grid(alpha=0.3)
    return _png(fig)


def edge_quality(panels: dict[str, dict]) -> bytes:
    """panels: model -> {ev, pnl, lo, hi, n}. Realised vs predicted PnL per contract by predicted-EV bucket."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), squeeze=False)
    for ax, (name, p) in zip(axes[0], panels.items()):
        ev, pnl = np.asarray(p["ev"]), np.asarray(p["pnl"])
        lo, hi = np.asarray(p["lo"]), np.asarray(p["hi"])
        span = np.nanmax(np.abs(np.concatenate([ev, lo, hi, [0.05]])))
        span = min(span, 1.0) * 1.1
        ax.plot([-span, span], [-span, span], color="#999999", ls="--", lw=1, label="realised = predicted")
        ax.axhline(0, color="#cccccc", lw=0.8)
        ax.axvline(0, color="#cccccc", lw=0.8)
        yerr = np.vstack([pnl - lo, hi - pnl])
        yerr = np.where(np.isfinite(yerr), yerr, 0)
        ax.errorbar(ev, pnl, yerr=yerr, fmt="o", color=PALETTE[0], capsize=3, label="realised (95% CI, events clustered)")
        for x, y, n in zip(ev, pnl, p["n"]):
            ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7, color="#555555")
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_title(f"{name}: each side at the ask, by predicted EV")
        ax.set_xlabel("predicted EV per contract ($)")
        ax.set_ylabel("realised PnL per contract ($)")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    return _png(fig)


def pnl_and_bankroll(cum: dict[str, dict], bank: dict[str, dict]) -> bytes:
    """cum: rule set -> {t, realised, predicted} cumulative over settled takes; bank: rule set -> {t, equity, drawdown}."""
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for i, (name, c) in enumerate(cum.items()):
        col = PALETTE[i % len(PALETTE)]
        a1.step(c["t"], c["realised"], where="post", color=col, label=f"{name} realised")
        a1.step(c["t"], c["predicted"], where="post", color=col, ls="--", alpha=0.7, label=f"{name} predicted EV")
    for i, (name, b) in enumerate(bank.items()):
        col = PALETTE[i % len(PALETTE)]
        a2.step(b["t"], b["equity"], where="post", color=col, label=name)
        a3.fill_between(b["t"], b["drawdown"], 0, step="post", color=col, alpha=0.35, label=name)
    a1.set_title("Cumulative PnL of takes decided in the period (by settlement time)")
    a1.set_ylabel("$")
    a2.set_title("Equity at cost (cash + open positions at cost)")
    a2.set_ylabel("$")
    a3.set_title("Drawdown from the running peak")
    a3.set_ylabel("$")
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8, loc="best")
        else:
            a.text(0.5, 0.5, "pending settlement", transform=a.transAxes, ha="center", va="center", color="#888888")
    a3.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.autofmt_xdate()
    return _png(fig)


def drift(panels: dict[str, dict[str, dict]]) -> bytes:
    """panels: model -> horizon -> {t, mean_diff}. Model minus mid over the period, one line per horizon."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.6 * len(panels)), squeeze=False, sharex=True)
    for ax, (model, by_h) in zip(axes[:, 0], panels.items()):
        for i, (h, d) in enumerate(by_h.items()):
            ax.plot(d["t"], d["mean_diff"], marker=".", color=PALETTE[i % len(PALETTE)], label=f"τ {h}")
        ax.axhline(0, color="#999999", lw=0.8)
        ax.set_title(f"{model}: mean model minus mid on paired snapshots, by time to close")
        ax.set_ylabel("P(YES) difference")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=5, loc="best")
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.autofmt_xdate()
    return _png(fig)


def trend(series: dict[str, dict], title: str, ylabel: str, *, zero_line: bool = False) -> bytes:
    """series: name -> {t, y}, one line each."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, (name, s) in enumerate(series.items()):
        ax.plot(s["t"], s["y"], marker="o", color=_color(name, i), label=name)
    if zero_line:
        ax.axhline(0, color="#999999", lw=0.8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    return _png(fig)

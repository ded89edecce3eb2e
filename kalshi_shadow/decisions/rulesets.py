"""Would-trade rule sets: read from a TOML file the user edits (`KALSHI_SHADOW_RULES`, else the shipped
`rules.toml`), validated strictly, each versioned by a hash of its content.

Strict because a typo in a threshold must not silently run the default: an unknown key, a missing key or a bad
value is a `RulesError` naming the set and the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kalshi_shadow.models import model_names

DEFAULT_RULES = Path(__file__).with_name("rules.toml")
SERIES = ("KXBTC15M", "KXBTCD", "KXBTC")


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the set and the key."""


@dataclass(frozen=True)
class RuleSet:
    name: str
    model: str
    series: tuple[str, ...]
    min_ev: float
    max_spread: float
    min_tau_seconds: float
    max_tau_seconds: float
    max_spot_age_seconds: float
    max_quote_age_seconds: float
    min_ask_size: float
    cooldown_seconds: float
    max_positions_per_event: int
    max_takes_per_day: int
    bankroll: float
    kelly_fraction: float
    max_contracts_per_trade: int
    max_stake_per_trade: float
    max_stake_per_event: float
    haircut_k: float
    haircut_window_days: float

    @property
    def version(self) -> str:
        """`name@hash` of the set's content: any edit makes a new version, with a log of its own."""
        body = json.dumps({k: v for k, v in asdict(self).items() if k != "name"}, sort_keys=True)
        return f"{self.name}@{hashlib.sha256(body.encode()).hexdigest()[:12]}"


# key -> (type, lowest allowed, highest allowed); None = unbounded
_NUMBERS: dict[str, tuple[type, float | None, float | None]] = {
    "min_ev": (float, -1.0, 1.0), "max_spread": (float, 0.0, 1.0),
    "min_tau_seconds": (float, 0.0, None), "max_tau_seconds": (float, 0.0, None),
    "max_spot_age_seconds": (float, 0.0, None), "max_quote_age_seconds": (float, 0.0, None),
    "min_ask_size": (float, 0.0, None), "cooldown_seconds": (float, 0.0, None),
    "max_positions_per_event": (int, 1, None), "max_takes_per_day": (int, 1, None),
    "bankroll": (float, 0.0, None), "kelly_fraction": (float, 0.0, 1.0),
    "max_contracts_per_trade": (int, 1, None), "max_stake_per_trade": (float, 0.0, None),
    "max_stake_per_event": (float, 0.0, None), "haircut_k": (float, 0.0, None), "haircut_window_days": (float, 0.0, None),
}
_KEYS = {f.name for f in fields(RuleSet)} - {"name"}


def _rule_set(name: str, raw: object, where: str) -> RuleSet:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: rule_sets.{name} must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise RulesError(f"{where}: rule_sets.{name}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
    missing = sorted(_KEYS - set(raw))
    if missing:
        raise RulesError(f"{where}: rule_sets.{name}: missing key {missing[0]!r}")
    values: dict[str, object] = {"name": name}
    for key, (kind, lo, hi) in _NUMBERS.items():
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
            raise RulesError(f"{where}: rule_sets.{name}.{key} must be {'an integer' if kind is int else 'a number'}, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise RulesError(f"{where}: rule_sets.{name}.{key} = {v!r} is outside [{lo}, {hi if hi is not None else 'inf'}]")
        values[key] = kind(v)
    if raw["model"] not in model_names():
        raise RulesError(f"{where}: rule_sets.{name}.model must be a registered model, one of {list(model_names())}, "
                         f"got {raw['model']!r}")
    values["model"] = raw["model"]
    series = raw["series"]
    if not isinstance(series, list) or not series or any(s not in SERIES for s in series):
        raise RulesError(f"{where}: rule_sets.{name}.series must be a non-empty list of {list(SERIES)}, got {series!r}")
    values["series"] = tuple(series)
    if values["min_tau_seconds"] > values["max_tau_seconds"]:
        raise RulesError(f"{where}: rule_sets.{name}.min_tau_seconds is above max_tau_seconds")
    return RuleSet(**values)


def load_rule_sets(path: str | Path | None = None) -> list[RuleSet]:
    """The rule sets of `path` (default: `KALSHI_SHADOW_RULES`, else the shipped file), in file order."""
    path = Path(path or os.environ.get("KALSHI_SHADOW_RULES") or DEFAULT_RULES)
    where = str(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RulesError(f"{where}: no such rules file (KALSHI_SHADOW_RULES)") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{where}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"rule_sets"})
    if unknown:
        raise RulesError(f"{where}: unknown key {unknown[0]!r} at the top level (only [rule_sets.<name>] tables)")
    sets = doc.get("rule_sets")
    if not isinstance(sets, dict) or not sets:
        raise RulesError(f"{where}: defines no [rule_sets.<name>] table")
    return [_rule_set(name, raw, where) for name, raw in sets.items()]

"""The one place models are registered: the built-ins, then a user's own.

A user's model is any object with a `name` (e.g. `mine-v1`: lower case, ending in a version) and a vectorised
`prob_yes(inputs)` (see `models/base.py`), named either

- by the setting `KALSHI_SHADOW_MODELS=pkg.module:attr[,pkg2.module:attr]` (an instance, a class, or a list of
  them), or
- by a Python entry point in the group `kalshi_shadow.models` of an installed package.

Registered models are priced on every quote, scored against the mid on the same rows, shown in the reports, and
may be named by a rule set, with no other change. A name may not be registered twice; a setting that names
something that does not import or is not a model stops with the setting named.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from importlib.metadata import entry_points

from kalshi_shadow.config import ConfigError
from kalshi_shadow.models.anchored import MarketAnchored
from kalshi_shadow.models.base import NAME, Model
from kalshi_shadow.models.lognormal import Avg60, SpotAtClose
from kalshi_shadow.models.recalibrated import Recalibrated

ENTRY_POINT_GROUP = "kalshi_shadow.models"
SETTING = "KALSHI_SHADOW_MODELS"
BUILTIN = (Avg60, SpotAtClose, MarketAnchored, Recalibrated)  # the first is the champion


def _as_models(obj, where: str) -> list[Model]:
    items = obj if isinstance(obj, (list, tuple)) else [obj]
    out = []
    for item in items:
        model = item() if isinstance(item, type) else item
        name = getattr(model, "name", None)
        if not callable(getattr(model, "prob_yes", None)) or not isinstance(name, str):
            raise ConfigError(f"{where}: {item!r} is not a model (it needs a `name` and a `prob_yes(inputs)`)")
        if not NAME.match(name):
            raise ConfigError(f"{where}: model name {name!r} must be lower case and end in a version, like 'mine-v1'")
        out.append(model)
    return out


def _from_setting(value: str) -> list[Model]:
    out = []
    for spec in (s.strip() for s in value.split(",") if s.strip()):
        module, _, attr = spec.partition(":")
        if not module or not attr:
            raise ConfigError(f"{SETTING}={value!r}: {spec!r} must be 'module:attribute'")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{SETTING}: cannot load {spec!r}: {type(exc).__name__}: {exc}") from None
        out += _as_models(obj, f"{SETTING} {spec!r}")
    return out


@lru_cache(maxsize=8)
def _load(setting: str) -> tuple[Model, ...]:
    models = [cls() for cls in BUILTIN]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin is a configuration error, named
            raise ConfigError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP}: {type(exc).__name__}: {exc}") from None
        models += _as_models(obj, f"entry point {ep.name!r}")
    models += _from_setting(setting)
    seen: set[str] = set()
    for m in models:
        if m.name in seen:
            raise ConfigError(f"model {m.name!r} is registered twice (built-in, entry point or {SETTING})")
        seen.add(m.name)
    return tuple(models)


def registered_models() -> tuple[Model, ...]:
    """Every model, built-ins first (the champion first of all), in the order their rows are written."""
    return _load(os.environ.get(SETTING, ""))


def model_names() -> tuple[str, ...]:
    return tuple(m.name for m in registered_models())

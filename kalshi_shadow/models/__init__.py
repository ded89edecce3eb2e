"""Models: named, versioned, vectorised P(YES) from a snapshot's point-in-time inputs (`base.py`), registered in one
place (`registry.py`). The built-ins: the lognormal champion and its spot-at-close challenger (`lognormal.py`), the
market-anchored model (`anchored.py`) and the walk-forward recalibrated champion (`recalibrated.py`)."""

from kalshi_shadow.models.base import Model, ModelInputs
from kalshi_shadow.models.registry import model_names, registered_models

__all__ = ["Model", "ModelInputs", "model_names", "registered_models"]

"""What the collectors of Kalshi's authenticated WebSocket share (`cfbenchmarks.py`, `books.py`): a handshake signed
like a REST request (`GET /trade-api/ws/v2`, anew for every connection) and the credentials it needs."""

from __future__ import annotations

from urllib.parse import urlsplit

from collectors.feed import FeedCollector
from kalshi_shadow.config import ConfigError, Settings
from kalshi_shadow.kalshi.auth import KalshiSigner


def keyed_signer(settings: Settings, command: str) -> KalshiSigner:
    """The signer of the configured key; a clear ConfigError without credentials or with an unreadable key."""
    if not settings.has_kalshi_credentials:
        raise ConfigError(f"{command} needs Kalshi credentials: set KALSHI_API_KEY_ID and KALSHI_PRIVATE_KEY_PATH")
    try:
        return KalshiSigner.from_key_file(settings.kalshi_api_key_id, settings.kalshi_private_key_path)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load the Kalshi private key: {type(exc).__name__}: {exc}") from None


class KalshiSocket(FeedCollector):
    """A feed on Kalshi's WebSocket: the handshake carries the three signed headers."""

    def __init__(self, url: str, data_dir, signer: KalshiSigner, **kw) -> None:
        super().__init__(url, data_dir, **kw)
        self.signer = signer

    def connect_headers(self) -> dict[str, str]:
        return self.signer.headers("GET", urlsplit(self.url).path or "/")

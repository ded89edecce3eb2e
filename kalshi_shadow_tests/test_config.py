"""Settings come from env vars; a wrong one is named in the error."""

from pathlib import Path

import pytest

from kalshi_shadow.config import ConfigError, Settings


def test_defaults_live_under_the_data_dir(tmp_path: Path) -> None:
    s = Settings.from_env({"KALSHI_SHADOW_DATA_DIR": str(tmp_path)})
    assert s.db_path == tmp_path / "warehouse.duckdb"
    assert s.raw_dir == tmp_path / "raw"
    assert s.series == ("KXBTC15M", "KXBTCD", "KXBTC")
    assert not s.has_kalshi_credentials


def test_credentials_need_both_variables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KALSHI_PRIVATE_KEY_PATH"):
        Settings.from_env({"KALSHI_API_KEY_ID": "abc"})
    with pytest.raises(ConfigError, match="KALSHI_PRIVATE_KEY_PATH=.*not a readable file"):
        Settings.from_env({"KALSHI_API_KEY_ID": "abc", "KALSHI_PRIVATE_KEY_PATH": str(tmp_path / "nope.pem")})


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    s = Settings.from_env({"KALSHI_API_KEY_ID": "secret-key-id", "KALSHI_PRIVATE_KEY_PATH": str(key)})
    assert s.has_kalshi_credentials
    assert "secret-key-id" not in repr(s) and str(key) not in repr(s)


@pytest.mark.parametrize(
    "env, name",
    [
        ({"KALSHI_QUOTE_INTERVAL_SECONDS": "fast"}, "KALSHI_QUOTE_INTERVAL_SECONDS"),
        ({"KALSHI_QUOTE_INTERVAL_SECONDS": "0"}, "KALSHI_QUOTE_INTERVAL_SECONDS"),
        ({"KALSHI_BASE_URL": "ftp://x"}, "KALSHI_BASE_URL"),
        ({"COINBASE_WS_URL": "http://x"}, "COINBASE_WS_URL"),
        ({"KALSHI_SERIES": " , "}, "KALSHI_SERIES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)

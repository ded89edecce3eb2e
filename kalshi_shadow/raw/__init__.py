"""Raw, append-only files: the only thing the collectors write, and what the warehouse loads exactly once."""

from kalshi_shadow.raw.schemas import RAW_SCHEMAS, RAW_TABLES
from kalshi_shadow.raw.store import RawWriter, list_raw_files

__all__ = ["RAW_SCHEMAS", "RAW_TABLES", "RawWriter", "list_raw_files"]

"""The DuckDB warehouse: schema (ddl.py), lock-aware connections (connection.py), raw loading (loader.py)."""

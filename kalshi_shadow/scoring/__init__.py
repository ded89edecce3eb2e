"""Settlement ingestion and snapshot scoring."""

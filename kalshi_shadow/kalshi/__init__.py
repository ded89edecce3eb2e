"""Kalshi Trade API v2 market-data client. It has no order, amend or cancel methods: this project is shadow-only."""

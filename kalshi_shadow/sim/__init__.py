"""A local exchange simulator: Kalshi Trade API v2 REST and a Coinbase Exchange-compatible WebSocket feed.

It is the platform's embedded default (no credentials, no internet) and what the tests talk to over loopback.
"""

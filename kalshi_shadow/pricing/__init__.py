"""Pricing: point-in-time volatility, the probability model, Kalshi fees, and edge snapshots."""

"""`kalshi-shadow sim`: run the exchange simulator on 127.0.0.1 until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import logging
import signal
import sys
from pathlib import Path

from kalshi_shadow.sim.server import SimConfig, SimHandle


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kalshi-shadow sim", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--kalshi-port", type=int, default=8765)
    ap.add_argument("--coinbase-port", type=int, default=8766)
    ap.add_argument("--kraken-port", type=int, default=8767)
    ap.add_argument("--bitstamp-port", type=int, default=8768)
    ap.add_argument("--kalshi-ws-port", type=int, default=8769, help="Kalshi WebSocket (signed handshake: cfbenchmarks_value)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fast-clock", action="store_true", help="15-minute markets every 2 min, hourly ones every 5 min")
    ap.add_argument("--public-key", type=Path, help="PEM public key whose signatures the sim accepts")
    ap.add_argument("--api-key-id", help="key id that goes with --public-key (default: KALSHI_API_KEY_ID)")
    ap.add_argument("--rate-limit", type=float, default=20.0, help="requests/second before 429")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sim %(levelname)s %(message)s", stream=sys.stderr)
    cfg = SimConfig(seed=args.seed, fast=args.fast_clock, host=args.host, kalshi_port=args.kalshi_port,
                    coinbase_port=args.coinbase_port, kraken_port=args.kraken_port,
                    bitstamp_port=args.bitstamp_port, kalshi_ws_port=args.kalshi_ws_port, rate_limit_per_second=args.rate_limit, api_key_id=args.api_key_id or os.environ.get("KALSHI_API_KEY_ID"),
                    public_key_pem=args.public_key.read_bytes() if args.public_key else None)
    handle = SimHandle(cfg)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(handle.serve())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: handle._stop and handle._stop.set())
        while not handle._ready.is_set() and not task.done():
            await asyncio.sleep(0.05)
        if not task.done():
            print(f"kalshi REST  {handle.kalshi_base_url}", flush=True)
            print(f"coinbase WS  {handle.coinbase_ws_url}", flush=True)
            print(f"kraken WS    {handle.kraken_ws_url}", flush=True)
            print(f"bitstamp WS  {handle.bitstamp_ws_url}", flush=True)
            print(f"kalshi WS    {handle.kalshi_ws_url}" + ("" if args.public_key else " (refuses every handshake: no --public-key)"), flush=True)
        await task

    asyncio.run(run())
    return 0

"""Run the simulator: its servers (Kalshi REST and WebSocket, the Coinbase, Kraken and Bitstamp feeds) in one asyncio loop, in a thread (tests) or as the `sim` command."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

import uvicorn

from kalshi_shadow.sim.clock import Clock, ManualClock, WallClock
from kalshi_shadow.sim.coinbase_ws import CoinbaseFeed
from kalshi_shadow.sim.exchange import Exchange
from kalshi_shadow.sim.faults import Faults
from kalshi_shadow.sim.kalshi_api import KalshiAPI
from kalshi_shadow.sim.kalshi_ws import WS_PATH, KalshiWS
from kalshi_shadow.sim.venue_ws import BitstampFeed, KrakenFeed

log = logging.getLogger(__name__)


@dataclass
class SimConfig:
    seed: int = 7
    fast: bool = False
    host: str = "127.0.0.1"
    kalshi_port: int = 0
    coinbase_port: int = 0
    kraken_port: int = 0
    bitstamp_port: int = 0
    kalshi_ws_port: int = 0
    clock: Clock | None = None
    series: tuple[str, ...] = ("KXBTC15M", "KXBTCD", "KXBTC")
    rate_limit_per_second: float = 20.0
    api_key_id: str | None = None
    public_key_pem: bytes | None = field(default=None, repr=False)
    ticks_per_second: float = 3.0


class SimHandle:
    """A running simulator. `stop()` shuts both servers down."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.clock = config.clock or WallClock()
        self.faults_state = Faults()
        self.exchange = Exchange(self.clock, seed=config.seed, fast=config.fast, series=config.series)
        self.api = KalshiAPI(self.exchange, self.faults_state, rate_limit_per_second=config.rate_limit_per_second,
                             api_key_id=config.api_key_id, public_key_pem=config.public_key_pem)
        self.feed = CoinbaseFeed(self.exchange, self.faults_state, seed=config.seed, ticks_per_second=config.ticks_per_second)
        self.kraken = KrakenFeed(self.exchange, self.faults_state, seed=config.seed)
        self.bitstamp = BitstampFeed(self.exchange, self.faults_state, seed=config.seed)
        self.kalshi_ws = KalshiWS(self.exchange, self.faults_state, api_key_id=config.api_key_id, public_key=self.api.public_key)
        self.kalshi_port = 0
        self.coinbase_port = 0
        self.kraken_port = 0
        self.bitstamp_port = 0
        self.kalshi_ws_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def kalshi_base_url(self) -> str:
        return f"http://{self.config.host}:{self.kalshi_port}/trade-api/v2"

    @property
    def kalshi_ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.kalshi_ws_port}{WS_PATH}"

    @property
    def coinbase_ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.coinbase_port}"

    @property
    def kraken_ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.kraken_port}/v2"

    @property
    def bitstamp_ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.bitstamp_port}"

    def faults(self, *, pause_seconds: float = 0.0, **kw) -> None:
        if pause_seconds:
            self.exchange.pause(pause_seconds)
        self.faults_state.set(**kw)

    def bitstamp_request_reconnect(self) -> None:
        """Send `bts:request_reconnect` to every Bitstamp client, as Bitstamp does before maintenance."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.bitstamp.request_reconnect(), self._loop).result(5)

    def set_outcome(self, ticker: str, result: str, settlement_value: str | None = None, status: str = "determined") -> None:
        self.exchange.set_outcome(ticker, result, settlement_value, status)

    def advance(self, seconds: float) -> float:
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs a ManualClock")
        return self.clock.advance(seconds)

    async def serve(self) -> None:
        """Serve until `stop()`; sets the real ports once both servers listen."""
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.kalshi_port))
        self.kalshi_port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(self.api.app(), log_level="warning", access_log=False, lifespan="off"))
        server.install_signal_handlers = lambda: None  # the owner of the process handles signals
        http_task = asyncio.create_task(server.serve(sockets=[sock]))
        async with (self.feed.serve(self.config.host, self.config.coinbase_port) as ws_server,
                    self.kraken.serve(self.config.host, self.config.kraken_port) as kraken_server,
                    self.bitstamp.serve(self.config.host, self.config.bitstamp_port) as bitstamp_server,
                    self.kalshi_ws.serve(self.config.host, self.config.kalshi_ws_port) as kalshi_ws_server):
            self.coinbase_port = ws_server.sockets[0].getsockname()[1]
            self.kalshi_ws_port = kalshi_ws_server.sockets[0].getsockname()[1]
            self.kraken_port = kraken_server.sockets[0].getsockname()[1]
            self.bitstamp_port = bitstamp_server.sockets[0].getsockname()[1]
            pumps = [asyncio.create_task(f.pump()) for f in (self.feed, self.kraken, self.bitstamp, self.kalshi_ws)]
            while not server.started:
                if http_task.done():
                    await http_task
                await asyncio.sleep(0.01)
            self._ready.set()
            await self._stop.wait()
            for pump in pumps:
                pump.cancel()
            server.should_exit = True
            await http_task

    def _run(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # surfaced to the starter
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 15.0) -> "SimHandle":
        self._thread = threading.Thread(target=self._run, name="kalshi-shadow-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)


def start_in_thread(config: SimConfig | None = None) -> SimHandle:
    return SimHandle(config or SimConfig()).start()


def manual_clock_at(year: int = 2026, month: int = 7, day: int = 29, hour: int = 4) -> ManualClock:
    return ManualClock(datetime(year, month, day, hour, tzinfo=timezone.utc))

"""Settings of the ingest worker (env prefix ``STORMALERT_``; ``KITE_API_KEY`` and
``KITE_ACCESS_TOKEN`` are honoured too)."""

from __future__ import annotations

from datetime import time
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator

from ingest.backoff import ConnectionPolicy
from proto.settings import BaseSettings

DUMMY_SIM_KEY = "sim-key"
DUMMY_SIM_TOKEN = "sim-token"
DEFAULT_SIM_URL = "http://127.0.0.1:8765"


class IngestSettings(BaseSettings):
    feed: Literal["sim", "kite", "upstox"] = "sim"
    shards: int = Field(2, ge=1, le=1024)

    kite_api_key: str = Field(
        "", validation_alias=AliasChoices("STORMALERT_KITE_API_KEY", "KITE_API_KEY",
                                          "kite_api_key"))
    kite_access_token: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices(
            "STORMALERT_KITE_ACCESS_TOKEN", "KITE_ACCESS_TOKEN", "kite_access_token"))
    kite_ws_url: str = "wss://ws.kite.trade"
    kite_api_url: str = "https://api.kite.trade"
    kite_mode: Literal["ltp", "quote", "full"] = "full"
    # Per-instrument modes as JSON, e.g. {"NSE:INFY": "full", "NFO": "ltp"}: a symbol wins over
    # its exchange; anything unmatched gets kite_mode.
    kite_modes: dict[str, Literal["ltp", "quote", "full"]] = Field(default_factory=dict)
    # The access token in Redis (stored by the dashboard's login) wins over kite_access_token.
    # Kite expires tokens daily at this IST time; while none is usable, Redis is polled.
    kite_token_expiry: time = time(6, 0)
    kite_token_poll_s: float = Field(3.0, gt=0)
    # The instrument master is loaded at start and again every day at this IST time.
    kite_instruments_refresh_at: time = time(8, 0)
    kite_tokens_per_connection: int = Field(3000, ge=1, le=3000)
    kite_max_connections: int = Field(3, ge=1, le=3)
    # Which instruments to subscribe: an explicit list of EXCHANGE:TRADINGSYMBOL, or every
    # instrument of these exchanges (all of the dump when empty), capped by the limits above.
    kite_symbols: list[str] = Field(default_factory=list)
    kite_exchanges: list[str] = Field(default_factory=list)
    # Upstox Market Data Feed V3 (feed "upstox"). The token in Redis (sa:feed:upstox:token,
    # stored by the dashboard's login) wins over upstox_access_token; after an HTTP 401 the
    # feed is needs_login and polls Redis every upstox_token_poll_s for a new one.
    upstox_access_token: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices(
            "STORMALERT_UPSTOX_ACCESS_TOKEN", "UPSTOX_ACCESS_TOKEN", "upstox_access_token"))
    upstox_api_url: str = "https://api.upstox.com"  # REST base: authorize lives here
    upstox_instruments_url: str = (
        "https://assets.upstox.com/market-quote/instruments/exchange/complete.json.gz")
    upstox_mode: Literal["ltpc", "full", "option_greeks", "full_d30"] = "full"
    # What to subscribe: instrument keys (or EXCHANGE:TRADINGSYMBOL), else every instrument
    # whose segment (NSE_EQ) or exchange (NSE) is listed, else the whole master; more than
    # the mode's per-connection limit x upstox_connections is a configuration error.
    upstox_instrument_keys: list[str] = Field(default_factory=list)
    upstox_exchanges: list[str] = Field(default_factory=list)
    upstox_connections: int = Field(1, ge=1, le=2)
    upstox_token_poll_s: float = Field(3.0, gt=0)
    # The Upstox master is loaded at start and again every day at this IST time (Upstox
    # publishes the day's master early in the morning).
    upstox_instruments_refresh_at: time = time(8, 0)
    # A failed daily master refresh (either feed) keeps the old master and tries again after
    # a capped exponential backoff between these bounds.
    instruments_retry_min_s: float = Field(5.0, gt=0)
    instruments_retry_max_s: float = Field(300.0, gt=0)
    # The simulator's base URL, used for both REST and WebSocket when feed is "sim".
    sim_url: str = DEFAULT_SIM_URL

    batch_max: int = Field(50, ge=1, le=10_000)  # ticks per stream entry
    # How long a partial batch may wait for more ticks. 0: write at once what has queued;
    # batches still grow under load, from the frames that arrive while a write is in flight.
    flush_ms: float = Field(0.0, ge=0, le=5_000)
    # Ticks queued between the sockets and the writer before new frames are dropped
    # (about 1 s of a 200k ticks/s feed).
    queue_max_ticks: int = Field(200_000, ge=1)
    heartbeat_silence_s: float = Field(5.0, gt=0)  # reconnect after this long with no data
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    drain_timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _credentials(self) -> IngestSettings:
        if self.feed == "kite" and self.kite_access_token.get_secret_value() \
                and not self.kite_api_key:
            raise ValueError("STORMALERT_KITE_ACCESS_TOKEN needs KITE_API_KEY, the app it "
                             "was issued for (a login through the dashboard brings its own)")
        return self

    def connection_policy(self) -> ConnectionPolicy:
        return ConnectionPolicy(self.heartbeat_silence_s, self.reconnect_min_s,
                                self.reconnect_max_s, self.connect_timeout_s)

    def api_url(self) -> str:
        return self.sim_url if self.feed == "sim" else self.kite_api_url

    def ws_url(self) -> str:
        if self.feed != "sim":
            return self.kite_ws_url
        return "ws" + self.sim_url.removeprefix("http") if self.sim_url.startswith("http") \
            else self.sim_url

    def credentials(self) -> tuple[str, str]:
        key, token = self.kite_api_key, self.kite_access_token.get_secret_value()
        if self.feed == "sim":
            return key or DUMMY_SIM_KEY, token or DUMMY_SIM_TOKEN
        return key, token

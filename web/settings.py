"""Settings of the web process (``STORMALERT_*`` environment variables and ``.env``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from proto.settings import BaseSettings


class WebSettings(BaseSettings):
    host: str = "127.0.0.1"
    # Set when several web processes run (a Kubernetes pod sets its name): each then beats
    # under web-INSTANCE, and its --check watches its own heartbeat.
    web_instance: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    port: int = Field(default=8000, ge=1, le=65535)
    # The seed's own name JWT_SECRET is honoured too. Unset: one random secret is kept in
    # Redis (proto.keys.JWT_SECRET) so every web process and every restart share it.
    jwt_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STORMALERT_JWT_SECRET", "JWT_SECRET"),
    )
    # Browsers drop Secure cookies on plain http://localhost; set it behind TLS.
    cookie_secure: bool = False
    session_ttl_s: int = Field(default=12 * 3600, gt=0)
    # Sign-in attempts (form posts) per client address per minute; slows password guessing.
    login_attempts_per_minute: int = Field(default=20, ge=1)
    # How many recent alerts the page shows, and how far back in sa:alerts it looks for them.
    history_alerts: int = Field(default=50, ge=0, le=1000)
    history_scan: int = Field(default=5000, ge=0)
    # Live updates: quotes are pushed at most this often; a silent stream gets a heartbeat.
    quotes_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_interval_s: float = Field(default=15.0, gt=0)
    # The test-message page says no notifier is running when none picked the request up
    # within this time.
    test_message_wait_s: float = Field(default=10.0, gt=0)
    # The backtest page says no engine worker is running when none picked the job up within
    # this time.
    backtest_wait_s: float = Field(default=10.0, gt=0)
    # Backtests a user may ask for per minute (an upload is parsed here, then kept in Redis
    # until a worker has run it).
    backtest_jobs_per_minute: int = Field(default=6, ge=1)
    # Broker API credentials are stored sealed with this key (a Fernet key, or a passphrase
    # of 16+ characters; several comma-separated, newest first, to rotate). Unset: a key
    # derived from a configured JWT secret; neither set: the admin cannot store credentials.
    secrets_key: SecretStr | None = None
    # /metrics answers a request with "Authorization: Bearer <metrics_token>" (a Prometheus
    # scraper) or from a signed-in admin; unset, only admins.
    metrics_token: SecretStr | None = None
    # Where the broker logins go; the API roots may point at a test server.
    kite_login_url: str = "https://kite.zerodha.com/connect/login"
    kite_api_url: str = "https://api.kite.trade"
    upstox_api_url: str = "https://api.upstox.com"
    # The dashboard's address as the brokers see it (the Upstox redirect URI is built from
    # it, e.g. https://alerts.example.com); unset, taken from each request.
    public_url: str | None = None

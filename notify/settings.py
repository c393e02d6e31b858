"""Settings of the notify process (``STORMALERT_*`` environment variables and ``.env``).

Field names carry a ``notify_`` prefix because one ``.env`` serves every process and the
engine has its own ``claim_idle_ms``; ``dashboard_url`` is shared on purpose.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from proto.settings import BaseSettings


class NotifySettings(BaseSettings):
    # Stable across restarts so a restarted notifier re-reads its own pending entries first.
    notify_consumer: str = Field(default="notify-1", min_length=1, max_length=64)
    # Alerts being delivered at once; channels of one alert are always sent concurrently.
    notify_concurrency: int = Field(default=64, ge=1, le=10_000)
    # An alert still being delivered after this long (a slow or failing channel) frees its
    # place among the notify_concurrency, so the alerts behind it are not held up; at most
    # notify_slow_lane alerts are delivered so at once.
    notify_slow_after_s: float = Field(default=0.5, gt=0)
    notify_slow_lane: int = Field(default=1000, ge=0, le=1_000_000)
    # Threads running apprise's blocking sends (one per channel send in progress).
    notify_send_threads: int = Field(default=64, ge=1, le=1024)
    notify_max_tries: int = Field(default=5, ge=1, le=100)
    notify_backoff_base_s: float = Field(default=1.0, gt=0)
    notify_backoff_cap_s: float = Field(default=60.0, gt=0)
    notify_send_timeout_s: float = Field(default=10.0, gt=0)
    # Entries of a dead consumer idle this long are taken over.
    notify_claim_idle_ms: int = Field(default=30_000, ge=100)
    notify_claim_interval_s: float = Field(default=5.0, gt=0)
    # Under 5 s: see PITFALLS (and it bounds how late a stop request is noticed).
    notify_block_ms: int = Field(default=1000, ge=1, le=4000)
    # On SIGTERM, in-flight alerts get this long to finish; the rest stay unacked.
    notify_drain_timeout_s: float = Field(default=10.0, ge=0)
    # Base URL of the web dashboard for links in messages; empty: no link.
    dashboard_url: str = ""

    # sending
    # API base URL per apprise scheme, replacing the service's own (a self-hosted Telegram
    # Bot API server, or a local test server): JSON, e.g. {"tgram": "http://127.0.0.1:8081"}.
    # Schemes: tgram, whatsapp, twilio.
    notify_api_base: dict[str, str] = Field(default_factory=dict)
    # Keep-alive connections per webhook host (json://, form:// are sent by notify.webhook).
    notify_webhook_connections: int = Field(default=100, ge=1, le=10_000)
    # Pacing (token buckets, one second's worth of burst): Telegram allows about 1 message/s
    # per chat and 30/s per bot; Meta's Cloud API about 80/s per business number; Twilio
    # queues above its per-sender rate (80/s for WhatsApp senders).
    notify_pace_tgram_chat_per_s: float = Field(default=1.0, gt=0)
    notify_pace_tgram_bot_per_s: float = Field(default=30.0, gt=0)
    notify_pace_whatsapp_number_per_s: float = Field(default=80.0, gt=0)
    notify_pace_twilio_number_per_s: float = Field(default=80.0, gt=0)
    # The longest Retry-After (Telegram's retry_after) honoured; a longer one is capped.
    notify_retry_after_max_s: float = Field(default=300.0, gt=0)

    # storm control and quiet hours
    # Alerts per user per minute (by the alert's emit time) sent one by one; the rest of that
    # minute is folded into one digest. A user's own setting (stormalert user prefs) wins;
    # 0 turns storm control off.
    notify_max_per_minute: int = Field(default=30, ge=0, le=1_000_000)
    # A digest goes out this long after its window closed and after the last alert folded
    # into it, so alerts of the window still being read are not left out.
    notify_digest_grace_s: float = Field(default=5.0, ge=0)
    # How often the due digests are looked for.
    notify_digest_scan_s: float = Field(default=1.0, gt=0)
    # Length of the digest's list of alerts, within the smallest channel limit (WhatsApp 1024).
    notify_digest_max_chars: int = Field(default=700, ge=200, le=3500)

    @model_validator(mode="after")
    def _backoff_order(self) -> NotifySettings:
        if self.notify_backoff_cap_s < self.notify_backoff_base_s:
            raise ValueError("notify_backoff_cap_s must be >= notify_backoff_base_s")
        return self

"""The ticker's text messages: ``{"type": "order"|"error"|"message", "data": ...}``.

Order updates (postbacks over the WebSocket) are summarised from a fixed list of fields, so
ids such as ``checksum``, ``guid``, ``user_id`` or ``placed_by`` never reach a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

KINDS = ("order", "error", "message")
ORDER_FIELDS = ("order_id", "status", "exchange", "tradingsymbol", "transaction_type",
                "order_type", "product", "quantity", "filled_quantity", "average_price",
                "price", "status_message")
MAX_TEXT = 300


class KiteTextError(ValueError):
    """A text frame that is not a JSON object with a string ``type``."""


@dataclass(frozen=True, slots=True)
class TextMessage:
    kind: str  # one of KINDS, or "other" for a type this client does not know
    data: Any


def parse_text(message: str | bytes) -> TextMessage:
    try:
        payload = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise KiteTextError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise KiteTextError("not an object with a string 'type'")
    kind = payload["type"]
    return TextMessage(kind if kind in KINDS else "other", payload.get("data"))


def describe_order(data: Any) -> str:
    """``order 2203…: COMPLETE NSE:SBIN BUY MARKET CNC 1/1 avg 470`` from an order update."""
    if not isinstance(data, dict):
        return f"order update without details: {str(data)[:MAX_TEXT]}"
    d = {name: data.get(name) for name in ORDER_FIELDS}
    text = (f"order {d['order_id']}: {d['status']} {d['exchange']}:{d['tradingsymbol']} "
            f"{d['transaction_type']} {d['order_type']} {d['product']} "
            f"{d['filled_quantity']}/{d['quantity']}")
    if d["average_price"]:
        text += f" avg {d['average_price']}"
    elif d["price"]:
        text += f" at {d['price']}"
    if d["status_message"]:
        text += f" ({str(d['status_message'])[:MAX_TEXT]})"
    return text

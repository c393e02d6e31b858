"""``python -m ingest.decode --feed kite|upstox FILE...``: decode captured frames, print JSON lines.

A file holds either one raw binary frame, or base64 text with one frame per line (the form of
the kiteconnect-mocks fixtures). Each tick is printed as one JSON object with the stream field
names, in frame order. A broken frame stops the run with one line naming the file, exit 1.

Feeds plug in through ``FEEDS``: a function from (frame bytes, receive time in µs) to ticks
that raises ``ValueError`` on a broken frame.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from ingest import kite, upstox
from proto.events import Tick

FrameDecoder = Callable[[bytes, int], list[Tick]]

_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


def _decode_kite(data: bytes, recv_us: int) -> list[Tick]:
    try:
        return kite.decode(data, recv_us, {})
    except kite.KiteDecodeError:
        # The kiteconnect-mocks captures hold one bare packet without the frame header.
        if len(data) in kite.PACKET_LENGTHS:
            return kite.decode(kite_frame_of_packet(data), recv_us, {})
        raise


def kite_frame_of_packet(packet: bytes) -> bytes:
    """A one-packet frame around a bare packet."""
    return b"\x00\x01" + len(packet).to_bytes(2, "big") + packet


def _decode_upstox(data: bytes, recv_us: int) -> list[Tick]:
    return upstox.decode(data, recv_us, {})


FEEDS: dict[str, FrameDecoder] = {"kite": _decode_kite, "upstox": _decode_upstox}


def frames_of(data: bytes) -> Iterator[bytes]:
    """The frames a captured file holds: base64 lines when it is base64 text, else itself."""
    if data and _BASE64_TEXT.fullmatch(data):
        lines = [line.strip() for line in data.splitlines() if line.strip()]
        try:
            decoded = [base64.b64decode(line, validate=True) for line in lines]
        except (binascii.Error, ValueError):
            decoded = []
        if decoded and all(decoded):
            yield from decoded
            return
    yield data


def decode_file(path: Path, decoder: FrameDecoder) -> Iterator[Tick]:
    recv_us = time.time_ns() // 1000
    for number, frame in enumerate(frames_of(path.read_bytes()), start=1):
        try:
            ticks = decoder(frame, recv_us)
        except ValueError as exc:
            raise ValueError(f"frame {number}: {exc}") from None
        yield from ticks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stormalert decode", description="Decode captured feed frames to JSON lines.")
    parser.add_argument("--feed", required=True, choices=sorted(FEEDS))
    parser.add_argument("files", metavar="FILE", nargs="+", type=Path)
    args = parser.parse_args(argv)
    decoder = FEEDS[args.feed]
    out = sys.stdout.buffer
    for path in args.files:
        try:
            for tick in decode_file(path, decoder):
                out.write(orjson.dumps(tick.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
        except OSError as exc:
            print(f"decode: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"decode: {path}: broken {args.feed} frame: {exc}", file=sys.stderr)
            return 1
        finally:
            out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

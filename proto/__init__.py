"""The contracts between StormAlert's processes: stream keys, event types, codecs and the bus.

Every process imports this package; ``ingest``, ``engine``, ``notify`` and ``web`` never
import each other.
"""

"""Market-data ingest: feed decoders, the feed connection workers that write ticks to the
shard streams, the ``decode`` command and the local exchange simulator (``ingest.sim``)."""

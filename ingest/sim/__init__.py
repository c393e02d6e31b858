"""A local exchange simulator speaking the Kite REST instruments dump and ticker WebSocket."""

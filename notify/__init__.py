"""notify: consumes ``sa:alerts`` (group ``notify``) and delivers each alert to its owner's
channels through apprise, once per channel, retrying with backoff and dead-lettering to
``sa:alerts:dead`` what cannot be delivered. Run with ``python -m notify``."""

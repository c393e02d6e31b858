"""How StormAlert's processes are started: the ``stormalert`` command, the local supervisor
behind ``stormalert up``, the embedded Redis launcher, and the production files."""

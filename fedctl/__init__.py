"""``fedctl``: the federation's command line, the one composition root.

It is the only package that imports the server packages (``shard``, ``router``), the TUI and
the load test, always lazily inside the command that needs them, so ``fedctl --help`` loads
neither ZeroMQ servers nor Textual nor pandas.
"""

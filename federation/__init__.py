"""luigi-federation: a sharded, durable federation of Luigi central schedulers."""

__version__ = "0.1.0"

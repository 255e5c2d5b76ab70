"""The benchmark study: models x datasets x seeds on one honest protocol (see protocol.py)."""

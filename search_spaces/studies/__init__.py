"""Shipped study files (`eqcvt-search study NAME`)."""

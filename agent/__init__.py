"""Docktor: scale queue workers on queue depth and throughput, with every decision explained."""

__version__ = "0.1.0"

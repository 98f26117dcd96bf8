"""Docktor's own benchmark programs (not installed): ``make bench`` runs them; docs/benchmarks.md has their figures."""

"""Executor plugins."""

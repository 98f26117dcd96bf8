"""Source plugins."""

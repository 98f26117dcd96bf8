"""The ``docktor`` command line."""

"""``python -m docktor.agent.cli``: the same as the ``docktor`` command."""

from docktor.agent.cli.app import main

main()

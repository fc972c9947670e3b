"""``python -m relaydesk`` is the ``relaydesk`` command."""

from relaydesk.cli.main import main

main()

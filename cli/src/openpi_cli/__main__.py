"""``python -m openpi_cli`` runs the ``pi`` command."""

from openpi_cli.main import main

main()

"""The ``pi`` command: thin glue over :mod:`openpi_core`."""

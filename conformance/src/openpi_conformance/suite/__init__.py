"""The checks themselves; collected by pytest with the plugin in ``pytest_plugin``."""

"""The conformance suite behind ``pi conformance``: backend parity, reference parity and
plugin contracts, as a pytest plugin that third parties can run in their own CI."""

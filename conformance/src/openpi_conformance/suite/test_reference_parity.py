"""Every backend, from every weight form, reproduces numbers recorded from openpi."""

from openpi_conformance.reference_parity import reference_checks


def test_reference_parity(reference_case, record_check):
    path, backend, form = reference_case
    record_check(*reference_checks(path, backend, form))

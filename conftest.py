"""Fixtures shared by every package's tests."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"

# Tests never pick up whatever plugins happen to be installed unless they ask:
# the process-wide manager loads no entry points by default.
os.environ.setdefault("PI_LOAD_PLUGINS", "")


@pytest.fixture(scope="session")
def reference_root() -> Path:
    """``../shared/reference``: numeric fixtures recorded from openpi's own models."""
    assert SHARED_REFERENCE.is_dir(), f"reference data not found at {SHARED_REFERENCE}"
    return SHARED_REFERENCE

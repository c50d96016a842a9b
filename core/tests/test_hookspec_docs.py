"""Every hook and its exact signature appears in the plugin guide."""

import inspect
from pathlib import Path

from openpi_core import hookspecs

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def hook_signatures() -> dict[str, str]:
    return {
        name: f"{name}({', '.join(inspect.signature(function).parameters)})"
        for name, function in vars(hookspecs).items()
        if name.startswith("openpi_") and callable(function)
    }


def test_every_hookspec_is_documented_with_its_signature():
    guide = GUIDE.read_text()
    signatures = hook_signatures()
    assert len(signatures) == 7
    for name, signature in signatures.items():
        assert f"### {name}" in guide, f"{name} has no section in {GUIDE}"
        assert signature in guide, f"the guide should show the signature {signature}"

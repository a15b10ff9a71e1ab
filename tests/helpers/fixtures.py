"""The bundled fixtures and their manifest (``fixtures/manifest.json``)."""

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
WITH_NATIVE = [e for e in MANIFEST if e["native_file"] is not None]
WITH_REFUSAL = [e for e in MANIFEST if e["expected_refusal"]]

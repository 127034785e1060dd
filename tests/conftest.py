"""Fixtures shared by several test modules."""
import json

import pytest


@pytest.fixture(scope="module")
def val_gt():
    """The real COCO subset's val2017 instances dict (skips when no subset is found)."""
    from mrcnn_edu.data.paths import resolve_data_root
    try:
        path = resolve_data_root() / "annotations" / "instances_val2017.json"
    except FileNotFoundError:
        pytest.skip("no COCO subset found")
    return json.loads(path.read_text())

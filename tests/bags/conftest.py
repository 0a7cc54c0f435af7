import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros"))

from bagtools import ROOT, moe_vla  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    moe_vla("init", "--preset", "tiny", "--seed", "7", "--instructions", ROOT / "data/instructions.txt", "--out", out)
    return out

"""scripts/gpu_check.sh: on a machine without CUDA it stops at once, with one line saying why."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script trains for real")
def test_gpu_check_without_cuda_exits_1_naming_the_missing_gpu(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")})
    assert result.returncode == 1
    assert "sees no CUDA GPU" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == "" and not (tmp_path / "out").exists()  # nothing trained, nothing written

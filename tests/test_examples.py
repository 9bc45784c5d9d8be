"""The runnable examples/ scripts the docs point to: each must run as documented."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_python_api_example_trains_restores_encodes_decodes_and_scores(tiny_data_dir, tmp_path):
    cmd = [
        sys.executable,
        "examples/python_api.py",
        f"--data_dir={tiny_data_dir}",
        f"--workdir={tmp_path}",
        "--hidden=32",
        "--batch_size=20",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "restored jmvae at epoch 1; modalities ('x', 'y', 'w')" in out
    assert "q(z|x): mean (40, 20), log variance (40, 20)" in out
    assert "'y': (40, 28, 28, 1), 'w': (40, 10)" in out
    assert "coherence on 40 test pairs: x->y" in out and "ELBO of 40 test pairs: -" in out
    assert (tmp_path / "jmvae" / "config.json").is_file()

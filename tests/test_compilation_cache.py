"""JAX's persistent compilation cache: where it lives, how it is turned off, and that a second process reuses it."""

import json
import logging
import subprocess
import sys

import pytest

from mvae_jax import cli
from tests.conftest import ROOT

# Trains the tiny run in argv[2] with the cache in argv[1]; prints the cache hits and the final loss.
_TRAIN_WITH_CACHE = """
import json, sys
from jax import monitoring
hits = []
monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("/cache_hits") else None)
from mvae_jax import cli, training
from mvae_jax.config import Config
assert cli.enable_compilation_cache(sys.argv[1]) is not None
config = Config(data_dir=sys.argv[3], workdir=sys.argv[2], hidden_dims=(32,), latent_dim=4, batch_size=20, epochs=1)
training.train_and_evaluate(config)
loss = json.loads(open(sys.argv[2] + "/metrics.jsonl").readline())["loss"]
print(json.dumps({"hits": len(hits), "loss": loss}))
"""


@pytest.mark.slow
def test_a_second_process_loads_the_programs_the_first_compiled(tiny_data_dir, tmp_path):
    cache = tmp_path / "cache"
    runs = []
    for name in ("first", "second"):
        cmd = [sys.executable, "-c", _TRAIN_WITH_CACHE, str(cache), str(tmp_path / name), str(tiny_data_dir)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0]["hits"] == 0 and any(cache.iterdir())
    assert runs[1]["hits"] >= 1  # the epoch's programs came from the cache
    assert runs[1]["loss"] == runs[0]["loss"]  # and compute the same


def test_the_cache_folder_comes_from_the_flag_the_environment_or_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv(cli.COMPILATION_CACHE_ENV, raising=False)
    monkeypatch.setenv("MVAE_JAX_CACHE", str(tmp_path / "mvae"))
    assert cli.compilation_cache_dir() == tmp_path / "mvae" / "jax"  # beside classifiers/
    monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, str(tmp_path / "env"))
    assert cli.compilation_cache_dir() == tmp_path / "env"
    assert cli.compilation_cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    for off in ("off", "OFF", "none", "0"):
        assert cli.compilation_cache_dir(off) is None
    monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, "off")
    assert cli.compilation_cache_dir() is None and cli.enable_compilation_cache() is None


def test_a_folder_that_cannot_be_made_leaves_the_cache_off_with_a_warning(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="mvae_jax"):
        assert cli.enable_compilation_cache(str(tmp_path / "file" / "cache")) is None
    assert "compilation cache off: cannot create" in caplog.text

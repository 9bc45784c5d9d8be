"""The package as a user gets it: the top-level API, the version, the console scripts, and the wheel installed
outside the repository (not editable) training and evaluating from there."""

import dataclasses
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_top_level_api_names_what_it_exports():
    import mvae_jax
    from mvae_jax import api, config, distributions, losses, models, plugins, training

    assert mvae_jax.Config is config.Config
    assert mvae_jax.MODELS is models.MODELS and mvae_jax.get_model is models.get_model
    assert mvae_jax.train is api.train and mvae_jax.evaluate is api.evaluate
    assert mvae_jax.train_and_evaluate is training.train_and_evaluate
    assert mvae_jax.restore_model is training.restore_model
    assert mvae_jax.register_model is plugins.register_model
    assert mvae_jax.losses is losses and mvae_jax.distributions is distributions
    for name in mvae_jax.__all__:
        assert getattr(mvae_jax, name) is not None, name
    assert set(mvae_jax.__all__) <= set(dir(mvae_jax))
    with pytest.raises(AttributeError, match="has no attribute 'Trainer'"):
        mvae_jax.Trainer  # noqa: B018


def test_version_is_the_installed_metadata_and_import_is_light():
    import importlib.metadata

    import mvae_jax

    assert mvae_jax.__version__ == "0.2.0"
    assert importlib.metadata.version("mvae_jax") == mvae_jax.__version__
    # ``import mvae_jax`` alone loads neither JAX nor TensorFlow: a notebook's first cell is instant
    out = subprocess.run(
        [sys.executable, "-c", "import sys, mvae_jax; print(sorted({'jax', 'tensorflow'} & set(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_train_from_python_reports_every_epoch_to_a_callback(tiny_config):
    """``mvae_jax.train``: the documented reporter gets each epoch's start, steps and metrics line."""
    import mvae_jax

    seen = []

    class Recorder:
        def epoch_start(self, epoch, epochs, steps):
            seen.append(("start", epoch, epochs, steps))

        def step(self, index, running_loss):
            seen.append(("step", int(index)))

        def epoch_end(self, metrics):
            seen.append(("end", metrics["epoch"], float(np.ravel(metrics["loss"])[0])))  # one value per run

    state = mvae_jax.train(tiny_config, reporter=Recorder())
    assert int(state.step) > 0
    starts = [s for s in seen if s[0] == "start"]
    ends = [s for s in seen if s[0] == "end"]
    assert [s[1:3] for s in starts] == [(1, 2), (2, 2)] and [e[1] for e in ends] == [1, 2]
    assert all(e[2] == e[2] for e in ends)  # finite losses
    lines = [json.loads(line) for line in (Path(tiny_config.workdir) / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in lines] == pytest.approx([e[2] for e in ends])
    with pytest.raises(ValueError, match="beta=-1.0"):
        mvae_jax.train(dataclasses.replace(tiny_config, beta=-1.0), progress=False)


@pytest.mark.slow
def test_the_wheel_installs_outside_the_tree_and_trains_and_evaluates(real_data_dir, tmp_path):
    """``python -m build`` makes an sdist and a wheel; the wheel, installed (not editable) into a fresh venv
    outside the repository, trains one epoch and evaluates with its console scripts, scoring with the
    weights shipped inside it. The venv reuses this environment's dependencies through a .pth line (installing
    JAX and TensorFlow again would take minutes); the editable mvae_jax of this environment is not visible
    there (its .pth hook is not read from a path added that way), which the test checks."""
    # built from a copy of the tracked files: a build/ folder left in the tree could carry stale modules
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wheel = next(dist.glob("mvae_jax-0.2.0-*.whl"))
    sdist = next(dist.glob("mvae_jax-0.2.0.tar.gz"))
    assert sdist.stat().st_size > 0
    names = zipfile.ZipFile(wheel).namelist()
    shipped = json.loads((ROOT / "mvae_jax" / "weights" / "classifiers.json").read_text())
    for record in shipped.values():
        assert f"mvae_jax/weights/{record['file']}" in names
    assert "mvae_jax/weights/classifiers.json" in names and "mvae_jax/commands/train.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "mvae-train = mvae_jax.commands.train:run" in scripts
    assert "mvae-eval = mvae_jax.commands.evaluate:run" in scripts
    assert not any(n.startswith(("tests/", "scripts/", "docs/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["MVAE_JAX_CACHE"] = str(tmp_path / "cache")  # where a classifier trained now would be cached

    def call(*args):
        proc = subprocess.run(args, cwd=away, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        return proc

    where = call(str(python), "-c", "import mvae_jax; print(mvae_jax.__file__, mvae_jax.__version__)").stdout.split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == "0.2.0"
    workdir = away / "run"
    call(
        str(venv / "bin" / "mvae-train"),
        "--model=jmvae",
        "--epochs=1",
        "--train_examples=2000",
        "--hidden_dims=64",
        "--latent_dim=8",
        f"--data_dir={real_data_dir}",
        f"--workdir={workdir}",
    )
    proc = call(
        str(venv / "bin" / "mvae-eval"),
        f"--workdir={workdir}",
        "--sections=coherence",
        "--coherence_points=500",
        "--prior_samples=200",
    )
    metrics = json.loads(proc.stdout)
    assert metrics["epoch"] == 1 and 0.0 <= metrics["coherence"]["x->w"] <= 1.0
    # scored by the weights inside the installed wheel: no classifier was trained, none read from the tree
    assert metrics["classifiers"]["mnist"] == pytest.approx(shipped["mnist"]["test_accuracy"])
    assert not (tmp_path / "cache" / "classifiers").exists()
    assert str(ROOT) not in proc.stderr

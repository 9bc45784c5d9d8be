"""The notebooks in docs/notebooks/ run from top to bottom (nbclient, a real Jupyter kernel) on the real data at a tiny
budget that their settings cell reads from the environment; what each one prints is checked."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "docs" / "notebooks"


def _execute(name: str, tmp_path: Path, data: Path, monkeypatch, epochs: int = 2) -> tuple[list[str], int, Path]:
    """(the text each code cell printed, the number of images shown, the run's workdir) of notebooks/<name>."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    workdir = tmp_path / "run"
    settings = {
        "MVAE_JAX_DATA_DIR": str(data),
        "MVAE_JAX_NOTEBOOK_EPOCHS": str(epochs),
        "MVAE_JAX_NOTEBOOK_EXAMPLES": "2000",
        "MVAE_JAX_NOTEBOOK_POINTS": "200",
        "MVAE_JAX_NOTEBOOK_LATENT_POINTS": "1000",
        "MVAE_JAX_NOTEBOOK_PRIOR_SAMPLES": "500",
        "MVAE_JAX_NOTEBOOK_STEPS": "200",
        "MVAE_JAX_NOTEBOOK_WORKDIR": str(workdir),
    }
    cache = os.environ.get("MVAE_JAX_COMPILATION_CACHE", "off")
    if cache.lower() != "off":  # the kernel's JAX shares the tests' compilation cache (JAX reads these itself)
        settings |= {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit it unrun"
    where = {"metadata": {"path": str(tmp_path)}}  # the kernel's working folder
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=where).execute()
    printed, images = [], 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        stdout = [o for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"]
        printed.append("".join(o.text for o in stdout))
        images += sum("image/png" in o.get("data", {}) for o in cell.outputs)
    return printed, images, workdir


def _value(printed: list[str], prefix: str) -> float:
    line = next(line for text in printed for line in text.splitlines() if line.startswith(prefix))
    return float(line[len(prefix) :].split()[0])


@pytest.mark.slow
def test_quickstart_trains_evaluates_and_shows_its_figures(tmp_path, real_data_dir, monkeypatch):
    printed, images, workdir = _execute("quickstart", tmp_path, real_data_dir, monkeypatch)
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert metrics["epoch"] in (1, 2) and (workdir / "best_checkpoint").is_dir()
    assert _value(printed, "coherence x->w ") == pytest.approx(metrics["coherence"]["x->w"], abs=1e-4)
    # 2 epochs of 2,000 pairs (the first fits pemvae's joint ELBO only): measured 0.72 / 0.73 on q(z|x) / q(z|y)
    # after 1 epoch; the floor is chance (0.1) plus a margin
    assert _value(printed, "latent accuracy q(z|x) ") > 0.5
    assert images == 3  # the curves, cross_modal.png, tsne.png
    assert (workdir / "eval" / "cross_modal.png").is_file() and (workdir / "eval" / "tsne.png").is_file()


@pytest.mark.slow
def test_own_training_loop_learns_with_the_librarys_losses(tmp_path, real_data_dir, monkeypatch):
    printed, images, _ = _execute("own_training_loop", tmp_path, real_data_dir, monkeypatch)
    lines = [line for text in printed for line in text.splitlines()]
    losses = [float(line.split("loss")[1].split()[0]) for line in lines if line.startswith("step")]
    assert len(losses) >= 5 and losses[-1] < 0.5 * losses[0]  # measured 1713.95 -> 518.39 in 200 steps
    line = next(line for line in lines if line.startswith("coherence x->w"))
    x_to_w, w_to_x = (float(part.split()[-1]) for part in line.split(" on ")[0].split(","))
    assert x_to_w > 0.5 and w_to_x > 0.6  # measured 0.7428 and 0.9018 after 200 steps
    assert images == 1


@pytest.mark.slow
def test_colab_tpu_notebook_trains_on_every_device_it_finds(tmp_path, real_data_dir, monkeypatch):
    printed, _, workdir = _execute("colab_tpu", tmp_path, real_data_dir, monkeypatch, epochs=1)
    text = "\n".join(printed)
    assert "1 x cpu (cpu)" in text or "(cpu)" in text  # the device cell on this machine
    assert "trained 2 seeds to epoch 1 with batch 128 on 1 devices" in text
    assert "coherence x->w: " in text and " over 2 seeds" in text
    assert f"not in Colab: the runs stay in {os.path.abspath(workdir)}" in text
    assert all((workdir / f"seed{s}" / "eval" / "metrics.json").is_file() for s in (0, 1))

"""One epoch of JMVAE-kl on the real trimodal data (skips without ../shared/datasets)."""

import json

import numpy as np
import pytest

from mvae_jax import evaluation, training
from mvae_jax.config import Config
from mvae_jax.data import load_dataset
from mvae_jax.models import get_model


def _train_and_score(config):
    """Train ``config``; label accuracy of q(z|x) and of q(z|y) decoded to w on the first 2,000 test pairs."""
    state = training.train_and_evaluate(config)
    dataset = load_dataset(config)
    model = get_model(config, dataset.modalities)
    test = {k: v[:2000] for k, v in dataset.test.items()}
    return tuple(evaluation.label_accuracy(model, state.params, test, (m,)) for m in ("x", "y"))


def test_one_epoch_of_jmvae_transfers_labels_and_evaluates(real_data_dir, tmp_path):
    """After 1 epoch: q(z|x) decoded to w >= 0.85 and q(z|y) >= 0.70 on 2,000 test pairs.

    Measured with these defaults (alpha 0.1, latent 20, batch 128, seed 0): 0.91 and 0.82.
    Then eval.py on the run writes every section and figure, with scoring CNNs
    trained 1 epoch (>= 0.97 on MNIST, >= 0.80 on Fashion-MNIST).
    """
    import eval as eval_cli

    workdir = tmp_path / "run"
    config = Config(data_dir=str(real_data_dir), workdir=str(workdir), epochs=1)
    acc_x, acc_y = _train_and_score(config)
    print(f"1 epoch: x->w {acc_x:.4f}, y->w {acc_y:.4f}")
    assert acc_x >= 0.85
    assert acc_y >= 0.70
    record = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert record["epoch"] == 1 and np.isfinite(record["loss"])

    eval_cli.main([f"--workdir={workdir}", f"--classifier_dir={tmp_path / 'classifiers'}", "--classifier_epochs=1",
                   "--latent_train_points=5000", "--iw_samples=20", "--ll_points=100", "--tsne_points=300"])
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    print(json.dumps(metrics))
    assert metrics["classifiers"]["mnist"] >= 0.97 and metrics["classifiers"]["fashion_mnist"] >= 0.80
    coherence = metrics["coherence"]
    assert len(coherence) == 13 and coherence["x->w"] >= 0.85 and coherence["x,y->w"] >= coherence["y->w"]
    assert coherence["joint->w"] >= 0.9 and coherence["prior"] > 0.1
    assert metrics["latent_accuracy"]["x"] >= 0.85 and metrics["latent_accuracy"]["w"] >= 0.99
    ll = metrics["log_likelihood"]
    assert ll["joint"] < ll["x"] < 0 and ll["w"] < 0
    for figure in ("tsne.png", "cross_modal.png"):
        assert (workdir / "eval" / figure).stat().st_size > 10_000


# Options of the 2-epoch runs below (everything else at its default, beta 1). mmvae uses K = 2
# importance samples instead of 10 to keep the suite short on CPU.
TWO_EPOCH_OPTIONS = {
    "telbo": {},
    "mvae": {},
    "pemvae": {},
    "mmvae": {"num_samples": 2},
    "mopoe": {},
}
# Thresholds (x->w, y->w). MVAE does not reach the 0.90 / 0.75 of the others in 2 epochs: measured
# 0.8345 / 0.7365 (also 0.833 / 0.742 with 3 random subsets, 0.8235 / 0.713 at beta 0.5, 0.8355 / 0.666
# at beta 2, and 0.61 / 0.60 with the label weighted 50). Its unimodal experts are trained only to
# reconstruct their own modality, the weak cross-modal transfer Shi et al. 2019 report for it.
THRESHOLDS = {"mvae": (0.80, 0.70)}


@pytest.mark.parametrize("name", sorted(TWO_EPOCH_OPTIONS))
def test_two_epochs_of_each_model_transfer_labels(name, real_data_dir, tmp_path):
    """After 2 epochs: q(z|x) decoded to w >= 0.90 and q(z|y) decoded to w >= 0.75 on 2,000 test pairs
    (MVAE: 0.80 and 0.70, see THRESHOLDS)."""
    config = Config(model=name, data_dir=str(real_data_dir), workdir=str(tmp_path / name), epochs=2,
                    **TWO_EPOCH_OPTIONS[name])
    acc_x, acc_y = _train_and_score(config)
    print(f"{name} 2 epochs: x->w {acc_x:.4f}, y->w {acc_y:.4f}")
    min_x, min_y = THRESHOLDS.get(name, (0.90, 0.75))
    assert acc_x >= min_x
    assert acc_y >= min_y



def test_three_beta_sweep_of_jmvae_in_one_program(real_data_dir, tmp_path):
    """--beta=0.5,1,2 for 1 epoch: three workdirs with a checkpoint each; more beta, less KL; labels transfer."""
    betas = (0.5, 1.0, 2.0)
    configs = [Config(data_dir=str(real_data_dir), workdir=str(tmp_path / f"beta{b}"), beta=b, epochs=1) for b in betas]
    states = training.train_sweep(configs)
    dataset = load_dataset(configs[0])
    test = {k: v[:2000] for k, v in dataset.test.items()}
    kls = []
    for config, state in zip(configs, states):
        assert training.Checkpoints(config.workdir).all_steps() == [1]
        record = json.loads((tmp_path / f"beta{config.beta}" / "metrics.jsonl").read_text())
        kls.append(record["kl"])
        model = get_model(config, dataset.modalities)
        acc_x = evaluation.label_accuracy(model, state.params, test, ("x",))
        print(f"beta {config.beta}: kl {record['kl']:.2f}, x->w {acc_x:.4f}, {record['time_s']:.1f} s")
        assert acc_x >= 0.80
    assert kls[0] > kls[1] > kls[2]

"""Short training runs on the real trimodal data (skips without ../shared/datasets)."""

import json

import numpy as np
import pytest

from mvae_jax import evaluation, training
from mvae_jax.config import Config
from mvae_jax.data import load_dataset
from mvae_jax.models import get_model

pytestmark = pytest.mark.slow  # subprocesses, real data, faults or several processes: `-m "not slow"` skips


def _train_and_score(config):
    """Train ``config``; label accuracy of q(z|x) and of q(z|y) decoded to w on the first 2,000 test pairs."""
    state = training.train_and_evaluate(config)
    dataset = load_dataset(config)
    model = get_model(config, dataset.modalities)
    test = {k: v[:2000] for k, v in dataset.test.items()}
    return tuple(evaluation.label_accuracy(model, state.params, test, (m,)) for m in ("x", "y"))


def test_one_epoch_beta_sweep_of_jmvae_transfers_labels_and_evaluates(real_data_dir, tmp_path):
    """--beta=1,2 for 1 epoch of the first 20,000 training pairs in one program, then eval.py on the beta-1 run.

    Each run has its workdir and checkpoint; more beta, less KL. The beta-1 run
    (the defaults: alpha 0.1, latent 20, batch 128, seed 0; the same parameters
    as training it alone, tests/test_sweep.py) decodes q(z|x) to w >= 0.75 and
    q(z|y) to w >= 0.68 on 2,000 test pairs, beta 2 q(z|x) >= 0.70 (measured
    2026-12-06: 0.795, 0.727 and 0.7445; 0.91 and 0.82 after a whole epoch).
    Then eval.py writes every section and figure, scored by the shipped CNNs
    (MNIST 0.9908, Fashion-MNIST 0.9155; asserted >= 0.99 and >= 0.91);
    measured x->w 0.795, joint->w 0.911, latent accuracy of q(z|x) 0.8898.
    """
    import eval as eval_cli

    betas = (1.0, 2.0)
    configs = [
        Config(
            data_dir=str(real_data_dir),
            workdir=str(tmp_path / f"beta{b}"),
            beta=b,
            epochs=1,
            train_examples=SHORT_RUN_EXAMPLES,
        )
        for b in betas
    ]
    states = training.train_sweep(configs)
    dataset = load_dataset(configs[0])
    test = {k: v[:2000] for k, v in dataset.test.items()}
    kls = []
    for config, state in zip(configs, states):
        assert training.Checkpoints(config.workdir).all_steps() == [1]
        record = json.loads((tmp_path / f"beta{config.beta}" / "metrics.jsonl").read_text())
        assert record["epoch"] == 1 and np.isfinite(record["loss"])
        kls.append(record["kl"])
        model = get_model(config, dataset.modalities)
        acc_x, acc_y = (evaluation.label_accuracy(model, state.params, test, (m,)) for m in ("x", "y"))
        print(
            f"beta {config.beta}: kl {record['kl']:.2f}, x->w {acc_x:.4f}, y->w {acc_y:.4f}, {record['time_s']:.1f} s"
        )
        assert acc_x >= (0.75 if config.beta == 1.0 else 0.70)
        if config.beta == 1.0:
            assert acc_y >= 0.68
    assert kls[0] > kls[1]

    workdir = tmp_path / "beta1.0"
    eval_cli.main(
        [
            f"--workdir={workdir}",
            "--latent_train_points=5000",
            "--iw_samples=20",
            "--ll_points=100",
            "--tsne_points=300",
            "--coherence_points=2000",
            "--prior_samples=2000",
            "--fid_points=1000",
        ]
    )
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    print(json.dumps(metrics))
    assert metrics["classifiers"]["mnist"] >= 0.99 and metrics["classifiers"]["fashion_mnist"] >= 0.91
    coherence = metrics["coherence"]
    assert len(coherence) == 13 and coherence["x->w"] >= 0.75 and coherence["x,y->w"] >= coherence["y->w"]
    assert coherence["joint->w"] >= 0.87 and coherence["prior"] > 0.1
    assert metrics["latent_accuracy"]["x"] >= 0.85 and metrics["latent_accuracy"]["w"] >= 0.99
    ll = metrics["log_likelihood"]
    assert ll["joint"] < ll["x"] < 0 and ll["w"] < 0
    for figure in ("tsne.png", "cross_modal.png"):
        assert (workdir / "eval" / figure).stat().st_size > 10_000
    assert (workdir / "eval" / "samples.png").stat().st_size > 2_000


# Options of the short runs below (everything else at its default, beta 1). mmvae uses K = 2
# importance samples instead of 10 to keep the suite short on CPU. pemvae trains 2 epochs with its
# defaults (docs/PEMVAE.md): its first epoch (warmup_epochs=1) fits the joint ELBO only, so it
# cannot yet infer from x or y.
SHORT_RUN_EXAMPLES = 20_000  # the first 20,000 training pairs: a third of the epoch, to keep the suite short
SHORT_RUN_OPTIONS = {
    "telbo": {},
    "mvae": {},
    "pemvae": {"epochs": 2},
    "mmvae": {"num_samples": 2},
    "mopoe": {},
    "mvtcae": {},
    "mmvaeplus": {},
    "dmvae": {},
    "cmvae": {},
    "jnf": {"epochs": 2, "jnf_warmup": 1, "train_examples": 10_000},
    "jnfdcca": {"epochs": 3, "jnf_dcca_epochs": 1, "jnf_warmup": 1, "train_examples": 10_000},
}
# Thresholds (x->w, y->w) on 2,000 test pairs, about 0.04 below what a short run on the first 20,000
# training pairs gave (seed 0, 2026-12-06, `python -m pytest -q -n 2 -rA tests/test_real_data.py`):
# telbo 0.7400 / 0.7080, mvae 0.6265 / 0.6360, pemvae (2 epochs: the joint ELBO, then every proper subset each
# step, single-modality subsets weighted 3) 0.8610 / 0.7575 (3 epochs: 0.8965 / 0.8130), mmvae 0.8505 / 0.7390,
# mopoe 0.7680 / 0.6815, mvtcae (alpha 5/6) 0.7670 / 0.6975, mmvaeplus (private 32, decoded with w = 0)
# 0.5625 / 0.5695, cmvae 0.5840 / 0.5650,
# dmvae (private 1) 0.8410 / 0.7460 (eval.py's coherence x->w, y->w on the same 2,000 pairs). JNF's stages
# (2026-12-07) on the first 10,000 pairs only, to keep the suite's time: jnf (2 epochs: the joint VAE, then the
# unimodal flows) 0.6515 / 0.6705, jnfdcca (3 epochs: DCCA, joint VAE, flows) 0.7240 / 0.6840; on 20,000 pairs
# they gave 0.8385 / 0.7535 and 0.8570 / 0.7905.
# Chance is 0.1; a third of an epoch is far from converged (the full epoch's numbers, 2026-11-24 to
# 2026-12-06, were 0.81-0.92 / 0.72-0.83): these runs catch a model that stops learning.
# MVAE transfers less well: its unimodal experts are trained only to reconstruct their own modality,
# the weakness Shi et al. 2019 report.
THRESHOLDS = {
    "telbo": (0.70, 0.66),
    "mvae": (0.58, 0.59),
    "pemvae": (0.82, 0.71),
    "mmvae": (0.81, 0.69),
    "mopoe": (0.72, 0.64),
    "mvtcae": (0.72, 0.65),
    "mmvaeplus": (0.52, 0.52),
    "dmvae": (0.80, 0.70),
    "cmvae": (0.54, 0.52),
    "jnf": (0.61, 0.63),
    "jnfdcca": (0.68, 0.64),
}


@pytest.mark.parametrize("name", sorted(SHORT_RUN_OPTIONS))
def test_a_short_run_of_each_model_transfers_labels(name, real_data_dir, tmp_path):
    """After 1 epoch (pemvae, jnf: 2, jnfdcca: 3) of the first 20,000 training pairs (jnf, jnfdcca: 10,000),
    q(z|x) and q(z|y) decoded to w beat THRESHOLDS on 2,000 test pairs."""
    options = {"epochs": 1, "train_examples": SHORT_RUN_EXAMPLES, **SHORT_RUN_OPTIONS[name]}
    config = Config(model=name, data_dir=str(real_data_dir), workdir=str(tmp_path / name), **options)
    acc_x, acc_y = _train_and_score(config)
    print(f"{name} {config.epochs} epoch(s): x->w {acc_x:.4f}, y->w {acc_y:.4f}")
    min_x, min_y = THRESHOLDS[name]
    assert acc_x >= min_x
    assert acc_y >= min_y

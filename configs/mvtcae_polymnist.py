"""MVTCAE on PolyMNIST (5 modalities): MultiVae's reproduction of MVTCAE (Hwang, Kim, Kim & Kim, NeurIPS 2021)
in its PolyMNIST benchmark (AgatheSenellart/MultiVae ``examples/mmnist``: its shared settings, latent 512, a
Laplace image likelihood of scale 0.75, batch 256, Adam 1e-3; its MVTCAE script: beta 2.5, alpha 5/6 (the
authors' PolyMNIST value), 400 epochs, "enough for this model to reach convergence"); a tenth of the
training set held out for validation (the epoch is chosen on it, not on the test set).

    python train.py --config=configs/mvtcae_polymnist.py --data_dir=../shared/datasets \
        --workdir=runs/mvtcae_polymnist
    python eval.py --workdir=runs/mvtcae_polymnist --step=best --sections=coherence

Expected at this budget: coherence by number of inputs about 0.59 / 0.77 / 0.83 / 0.86 in the paper, 0.64 /
0.82 / 0.88 / 0.91 in MultiVae's reproduction (their networks and scorers; docs/POLYMNIST.md says what
differs here). Differences: no ReduceLROnPlateau schedule (MultiVae's, patience 7), this library's PolyMNIST
conv networks. Not yet run to this budget here (``scripts/reproduce_polymnist.py`` runs it).
Time: 384 samples/s on 2 CPU cores (``bench/peer_multivae.py --data=polymnist``, 2026-12-07, at batch 128):
about 2.5 minutes per epoch of 54,000, some 16 hours for the 400 epochs. A GPU is needed for the budget.
"""


def get_config() -> dict:
    return {
        "model": "mvtcae",
        "dataset": "polymnist",
        "num_modalities": 5,
        "image_likelihood": "laplace",
        "latent_dim": 512,
        "beta": 2.5,
        "tc_alpha": 5 / 6,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "epochs": 400,
        "validation": 6000,
    }

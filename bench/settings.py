"""The settings the benchmark scripts give each model, per data set: plain data, no imports.

``bench/throughput.py`` builds its Config from these, and ``bench/peer_multivae.py`` gives MultiVae's models
the same values, so both libraries time the same model. On the trimodal set the models run at the config
defaults (stated where they matter for the cost); on PolyMNIST at their published recipes:

- MoPoE, MVTCAE, MMVAE, JMVAE, TELBO, MVAE: MoPoE's PolyMNIST recipe (``configs/mopoe_polymnist.py``: latent
  512, beta 2.5, Laplace likelihood of scale 0.75); MVTCAE's alpha 5/6 (the authors' PolyMNIST value);
  MMVAE with K = 1 (the K of the MMVAE baseline in MMVAE+'s PolyMNIST recipe, srl-ethz/mmvaeplus
  ``run_polyMNIST_experiment.sh``; at K = 10 one epoch did not finish in 10 minutes on 2 CPU cores);
- MMVAE+ and CMVAE: MMVAE+'s recipe, shared and private latents of 32 each, K = 1, beta 2.5.
"""

from __future__ import annotations

DATASETS = ("trimodal", "polymnist")

MODEL_OPTIONS = {
    "trimodal": {
        "mmvae": {"num_samples": 10},  # the config default, stated: K matters for mmvae's cost
        "jnfdcca": {"epochs": 50},  # past its 30 DCCA and 10 warm-up epochs (refused otherwise)
    },
    "polymnist": {
        "*": {"image_likelihood": "laplace", "latent_dim": 512, "beta": 2.5},
        "mmvae": {"num_samples": 1},
        "mmvaeplus": {"latent_dim": 32, "private_dim": 32},
        "cmvae": {"latent_dim": 32, "private_dim": 32},
        "pemvae": {"subset_sampling": "random", "num_subsets": 1},
        "jnfdcca": {"epochs": 50},
    },
}


def model_options(dataset: str, model: str) -> dict:
    """Config fields of ``model`` in the benchmarks on ``dataset``: the data set's common ones, then the model's."""
    if dataset not in MODEL_OPTIONS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    table = MODEL_OPTIONS[dataset]
    return {**table.get("*", {}), **table.get(model, {})}

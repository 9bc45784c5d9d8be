"""MoPoE on PolyMNIST (5 modalities): the recipe of the MoPoE authors' job_polymnist (Sutter, Daunhawer &
Vogt 2021): their conv networks, a Laplace image likelihood of scale 0.75, latent 512, beta 2.5, batch 256,
Adam 5e-4, 300 epochs; 10,000 training examples held out here for validation (the epoch is chosen on them,
not on the test set).

    python train.py --config=configs/mopoe_polymnist.py --data_dir=../shared/datasets \
        --workdir=runs/mopoe_polymnist
    python eval.py --workdir=runs/mopoe_polymnist --step=best

Expected at this budget: the MoPoE paper's coherence of about 0.66 / 0.77 / 0.81 / 0.83 for 1 to 4 inputs
(their data and ResNet scorers; docs/POLYMNIST.md says what differs here). Not yet run to this budget
here: docs/POLYMNIST.md has the numbers measured so far and their budgets.
Time: measured 0.449 s per step of 128 at latent 512 on 2 CPU cores (2026-12-07, with the convolutions as
matmuls; 1.14 s before); at batch 256 (195 steps per epoch) about twice that per step, an estimate: some
15 hours of this CPU for the 300 epochs. A GPU is needed for the published budget.
"""


def get_config() -> dict:
    return {
        "model": "mopoe",
        "dataset": "polymnist",
        "num_modalities": 5,
        "image_likelihood": "laplace",
        "latent_dim": 512,
        "beta": 2.5,
        "batch_size": 256,
        "learning_rate": 5e-4,
        "epochs": 300,
        "validation": 10000,
    }

"""MVAE on binarized MNIST with labels: Wu & Goodman 2018's recipe (swish MLPs, 3-layer decoders, label
weight 50, the joint and both unimodal ELBOs).

    python train.py --config=configs/mvae_mnist_label.py --data_dir=../shared/datasets \
        --workdir=runs/mvae_mnist_label_500
    python eval.py --workdir=runs/mvae_mnist_label_500 --sections=objective,log_likelihood,coherence \
        --iw_proposal=joint --iw_samples=1000 --ll_points=0

Expected: the objective section's test loss 189.14 (seed 0, last epoch), against the paper's 188.8 and
MultiVae's 188.3 +- 0.4; x->w coherence 0.19 and w->x 0.10 (MVAE's weak transfer from one modality).
Time: 172 min on 2 CPU cores (docs/recipes.md, "MVAE's recipe on MNIST with labels"; docs/REPRODUCTIONS.md).
"""


def get_config() -> dict:
    return {
        "model": "mvae",
        "dataset": "mnist_label",
        "latent_dim": 64,
        "decoder_hidden_dims": (512, 512, 512),
        "activation": "swish",
        "likelihood_weights": (1.0, 50.0),
        "num_subsets": 0,
        "batch_size": 100,
        "epochs": 500,
        "kl_warmup_epochs": 200,
    }

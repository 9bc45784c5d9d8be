"""JNF-DCCA on PolyMNIST (5 modalities): the recipe of MultiVae's PolyMNIST benchmark (its
examples/mmnist/training/config2.py and jnfd.py, by the JNF paper's first author): a Laplace image likelihood
of scale 0.75, latent 512, batch 256, Adam 1e-3, 200 epochs of DCCA (embeddings of 20), then 800 epochs of
which the first half is the joint VAE's warm-up; a tenth of the training set held out for validation, as there.

    python train.py --config=configs/jnfdcca_polymnist.py --data_dir=../shared/datasets \
        --workdir=runs/jnfdcca_polymnist
    python eval.py --workdir=runs/jnfdcca_polymnist --step=best

Expected at this budget: MultiVae's benchmark gives JNF-DCCA a coherence of about 0.76 / 0.89 / 0.93 / 0.95
for 1 to 4 inputs (its data, networks and scorers; docs/POLYMNIST.md says what differs here). Not run here yet.
What differs from MultiVae's run: one learning rate for every stage (MultiVae trains the DCCA at 1e-4), no
ReduceLROnPlateau schedule, the MoPoE conv networks of this library (MultiVae's EncoderConvMMNIST_adapted),
the joint encoder JNF's own.
Time: not measured for this model; MoPoE's step at latent 512 takes 1.14 s per 128 examples on 2 CPU cores
(docs/POLYMNIST.md), so the 1,000 epochs of 54,000 examples are weeks of this CPU: a GPU is needed.
"""


def get_config() -> dict:
    return {
        "model": "jnfdcca",
        "dataset": "polymnist",
        "num_modalities": 5,
        "image_likelihood": "laplace",
        "latent_dim": 512,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "jnf_dcca_epochs": 200,
        "jnf_dcca_dim": 20,
        "jnf_warmup": 400,
        "epochs": 1000,
        "validation": 6000,
    }

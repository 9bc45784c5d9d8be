"""docs/RESULTS.md's budget on the trimodal set: 100 epochs, 5,000 training pairs held out for validation,
seeds 0, 1, 2 as one seed sweep; every model at its own defaults (give --model).

    python train.py --config=configs/trimodal_results.py --model=pemvae --data_dir=../shared/datasets \
        --workdir=runs/results/pemvae
    python eval.py --workdir=runs/results/pemvae/seed0 --step=best

(scripts/results.py runs this for every model and writes docs/RESULTS.md.)
Expected (pemvae, mean +- std over the 3 seeds): x->w coherence 0.9729 +- 0.0016, y,w->x 0.9795 +- 0.0010,
prior coherence 0.3203 +- 0.0136; docs/RESULTS.md has every model.
Time: 61 s (jmvae) to 254 s (mmvae) per 3-seed sweep on one H100, three sweeps sharing it (2026-11-26).
"""


def get_config() -> dict:
    return {
        "dataset": "trimodal",
        "beta": 1.0,
        "epochs": 100,
        "validation": 5000,
        "seed": (0, 1, 2),
    }

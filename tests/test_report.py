"""Markdown tables of evaluated runs: one value per cell, or mean ± sample std over seeds."""

from __future__ import annotations

import math

import pytest

from mvae_jax.evaluation import report


def _metrics(x_to_w: float, ll: float, params: int = 1000) -> dict:
    return {"params": params, "coherence": {"x->w": x_to_w, "prior": 0.2}, "log_likelihood": {"x": ll}}


def test_one_run_per_row_gives_the_values():
    text = report.results_table([("jmvae", _metrics(0.9, -100.0))])
    assert "| jmvae | 1,000 | 0.9000 | 0.2000 |" in text and "| jmvae | 1,000 | -100.00 |" in text


def test_several_seeds_give_mean_and_sample_std():
    seeds = [_metrics(0.5, -100.0), _metrics(0.7, -104.0)]
    text = report.results_table([("pemvae", seeds), ("jmvae", [_metrics(0.8, -90.0)])])
    # mean 0.6, sample std sqrt(((0.1)^2 + (0.1)^2) / 1) = 0.1414; log-likelihood -102 ± 2.83
    assert "| pemvae | 1,000 | 0.6000 ± 0.1414 | 0.2000 ± 0.0000 |" in text
    assert "| pemvae | 1,000 | -102.00 ± 2.83 |" in text
    assert "| jmvae | 1,000 | 0.8000 | 0.2000 |" in text


def test_mean_std_and_cells():
    assert report.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert report.mean_std([4.0]) == (4.0, 0.0)
    assert report.format_cell([], 2) == "" and report.format_cell([1.234], 1) == "1.2"


def _eval_flags(sections: list[str]) -> dict:
    """eval_flags as eval.py records them for scripts/results.py's default flags (seed added per run)."""
    import eval as eval_cli

    defaults = vars(eval_cli.make_parser().parse_args(["--workdir=."]))
    flags = {k: defaults[k] for k in ("iw_proposal", "classifier_epochs", "latent_train_points", "fid_points")}
    flags.update(iw_samples=1000, ll_points=500, tsne_points=2000, prior_samples=defaults["prior_samples"], step="best")
    return {**flags, "sections": sections}


def _write_run(workdir, best: int, records: list[dict], metrics: dict) -> None:
    """A finished run's files as train.py and eval.py write them: best_checkpoint/<best>, metrics.jsonl, eval/."""
    import json

    (workdir / "eval").mkdir(parents=True)
    (workdir / "best_checkpoint" / str(best)).mkdir(parents=True)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (workdir / "eval" / "metrics.json").write_text(json.dumps(metrics))


def test_results_script_reports_mean_and_std_over_seeds_from_finished_runs(tmp_path):
    """scripts/results.py --summarize_only on two finished seeds (files as train.py and eval.py write them):
    every table cell is mean ± std, the convergence and cost tables and the validation figure are there."""
    from scripts import results

    flags = _eval_flags(["coherence", "latent_accuracy", "log_likelihood", "objective", "fid", "tsne", "cross_modal"])
    runs = tmp_path / "runs"
    for seed, x_to_w in ((0, 0.90), (1, 0.94)):
        workdir = runs / "jmvae" / f"seed{seed}"
        records = [
            {"epoch": e, "time_s": 10.0, "samples_per_s": 5000.0, "validation_loss": 300 - e + (e == 12) * 5}
            for e in range(1, 13)
        ]
        metrics = {
            "epoch": 11,
            "params": 4380362,
            "eval_seconds": 100.0,
            "eval_flags": {**flags, "seed": seed},
            "coherence": {"x->w": x_to_w, "prior": 0.3},
            "fid": {"w->x": 40.0 + seed, "points": 5000},
        }
        _write_run(workdir, 11, records, metrics)
        for name in ("tsne.npz", "cross_modal.png"):
            (workdir / "eval" / name).write_bytes(b"")
    out = tmp_path / "RESULTS.md"
    results.main(["--models=jmvae", "--seeds=0,1", "--epochs=12", f"--runs={runs}", f"--out={out}", "--summarize_only"])
    text = out.read_text()
    assert "| jmvae | 4,380,362 | 0.9200 ± 0.0283 | 0.3000 ± 0.0000 |" in text  # mean 0.92, sample std 0.0283
    assert "| jmvae | 4,380,362 | 40.50 ± 0.71 |" in text
    # Best epoch 11 (289; epoch 12 rose to 293); over the last 10 epochs, epoch 2 -> 12: 293 - 298 = -5.
    assert "| jmvae | 11, 11 | 289.00 ± 0.00 | -5.00 ± 0.00 |" in text
    assert "| jmvae | 4,380,362 | 120 ± 0 | 5000 ± 0 | 100 ± 0 |" in text
    assert (tmp_path / "results_validation.png").stat().st_size > 10_000 and "Missing runs" not in text


def test_welch_against_a_hand_computation():
    # a = 1, 2, 3 and b = 4, 5, 6: t = -3 / sqrt(1/3 + 1/3) = -3.674 with 4 degrees of freedom, p = 0.02131.
    difference, p = report.welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert difference == -3.0 and p == pytest.approx(0.02131, abs=1e-5)
    assert math.isnan(report.welch([1.0], [2.0, 3.0])[1]) and math.isnan(report.welch([1.0, 1.0], [2.0, 2.0])[1])


def test_difference_table_gives_the_reference_minus_each_run_with_welchs_p():
    seeds = {
        "pemvae": [_metrics(0.9, -100.0), _metrics(0.92, -100.0), _metrics(0.94, -100.0)],
        "jmvae": [_metrics(0.8, -90.0), _metrics(0.82, -90.0), _metrics(0.84, -90.0)],
        "mvae": [_metrics(0.9, -90.0)],
    }
    text = report.difference_table("pemvae", list(seeds.items()), [("coherence", "x->w")])
    lines = text.splitlines()
    assert lines[0] == "| against | coherence x->w |"
    # The same spread (sd 0.02) on both sides, means 0.92 and 0.82: t = 0.1 / (0.02 * sqrt(2/3)) = 6.124, df 4.
    assert lines[2] == "| jmvae | +0.1000 (p 0.004) |" and lines[3] == "| mvae | +0.0200 |"
    assert report.difference_table("telbo", list(seeds.items()), [("coherence", "x->w")]) == ""


def test_results_script_reports_another_data_set_from_its_contract(tmp_path):
    """--dataset=polymnist: the title names its modalities (from the runs' config.json), the coherence by number
    of inputs gets its table, the reference is compared on it, and no trimodal words appear."""
    from mvae_jax.config import Config, save_config
    from scripts import results

    flags = _eval_flags(["coherence", "latent_accuracy"])
    runs = tmp_path / "runs"
    for model, base in (("pemvae", 0.6), ("mopoe", 0.5)):
        for seed in (0, 1):
            workdir = runs / model / f"seed{seed}"
            records = [{"epoch": e, "time_s": 10.0, "samples_per_s": 500.0, "validation_loss": 9 - e} for e in (1, 2)]
            metrics = {
                "epoch": 2,
                "params": 1000,
                "eval_seconds": 10.0,
                "eval_flags": {**flags, "seed": seed},
                "coherence": {"m0->m1": base, "prior": 0.2},
                "coherence_by_inputs": {"1": base + seed * 0.02, "2": base + 0.1, "mean": base + 0.05},
                "latent_accuracy": {"m0": 0.8},
            }
            _write_run(workdir, 2, records, metrics)
            save_config(Config(model=model, dataset="polymnist", num_modalities=4, workdir=str(workdir)), workdir)
    out = tmp_path / "RESULTS_POLYMNIST.md"
    results.main(
        ["--dataset=polymnist", "--models=pemvae,mopoe", "--seeds=0,1", "--epochs=2", "--sections=coherence,"
         "latent_accuracy", f"--runs={runs}", f"--out={out}", "--summarize_only"]
    )  # fmt: skip
    text = out.read_text()
    assert text.startswith("# Results: every model on polymnist (m0, m1, m2, m3), several seeds")
    assert "| run | params | 1 | 2 | mean |" in text and "| mopoe | 1,000 | 0.5100 ± 0.0141 | 0.6000 ± 0.0000 |" in text
    assert (
        "| against | latent_accuracy m0 | latent_accuracy m1 | latent_accuracy m2 | latent_accuracy m3 | "
        "coherence_by_inputs 1 |" in text
    )
    # by 1 input: 0.60, 0.62 against 0.50, 0.52 (sd 0.0141 each): t = 0.1 / 0.0141 = 7.07, df 2, p 0.019
    assert "| mopoe | +0.0000 |  |  |  | +0.1000 (p 0.019) | +0.1000 | +0.1000 | +0.0000 |" in text
    assert "tSNE of the posterior means" not in text and "decoded from z ~ p(z), seed" not in text  # not evaluated
    assert "Budget: 2 epochs of" in text
    assert "trimodal" not in text and "x, y, w" not in text and "Missing runs" not in text
    assert (tmp_path / "results_polymnist_validation.png").is_file()

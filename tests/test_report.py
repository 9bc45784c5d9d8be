"""Markdown tables of evaluated runs: one value per cell, or mean ± sample std over seeds."""

from __future__ import annotations

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

"""Markdown tables of evaluated runs (``eval.py --compare``, ``scripts/results.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import statistics

SECTIONS = (
    ("coherence", "Coherence"),
    (
        "coherence_by_inputs",
        "Coherence by number of inputs: mean over the subsets of k inputs and the targets outside them",
    ),
    ("label_coherence", "Coherence of samples given the label: z ~ q(z|w), 100 per class"),
    ("latent_accuracy", "Latent accuracy"),
    ("log_likelihood", "Log-likelihood (nats)"),
    ("fid", "FID in the scoring CNN's features (lower is closer to the real images)"),
    ("diversity", "Diversity given the label: mean pairwise feature distance of generated images of one class"),
)


def single_modality_scores(spec, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(section, key) of the paper's question for a run of data set ``spec`` (a ``contract.DatasetSpec``) with
    modalities ``names``: how far apart the single-modality clusters are (latent accuracy of q(z|m) for each
    modality m that is not the label), then transfer from one such modality (coherence m->t to each scored
    target t). On the trimodal data: latent accuracy x, y; coherence x->w, y->w, x->y, y->x.
    scripts/pemvae_study.py chooses on these; scripts/results.py compares its --reference on them."""
    sources = [n for n in names if n != spec.label_modality]
    label = [spec.label_modality] if spec.label_modality in names else []
    scored = list(spec.scorers_of(names))
    return (
        *(("latent_accuracy", m) for m in sources),
        *(("coherence", f"{m}->{t}") for t in label for m in sources),
        *(("coherence", f"{m}->{t}") for m in sources for t in scored if t != m),
    )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); the deviation of a single value is 0."""
    values = [float(v) for v in values]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_cell(values: Sequence[float], digits: int) -> str:
    """One value as is; several (one per seed) as ``mean ± std``; none as an empty cell."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def results_table(runs) -> str:
    """Markdown tables of coherence, sampled coherence, latent accuracy, log-likelihood, FID and diversity (one
    each, where the runs have the section), a row per run.

    ``runs``: (name, metrics) pairs, metrics one eval/metrics.json, or a list of
    them (one per seed: each cell is then mean ± sample std over the seeds).
    """
    runs = [(name, [m] if isinstance(m, Mapping) else list(m)) for name, m in runs]
    tables = []
    for section, title in SECTIONS:
        columns = []
        for _, seeds in runs:
            for m in seeds:
                columns += [k for k, v in m.get(section, {}).items() if isinstance(v, float) and k not in columns]
        if not columns:
            continue
        head = ["run", "params", *columns]
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        digits = 2 if section in ("log_likelihood", "fid", "diversity") else 4
        for name, seeds in runs:
            cells = [
                format_cell([m[section][k] for m in seeds if m.get(section, {}).get(k) is not None], digits)
                for k in columns
            ]
            lines.append("| " + " | ".join([name, f"{seeds[0].get('params', 0):,}", *cells]) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(mean(a) - mean(b), two-sided p-value of Welch's t-test); the p-value is nan with fewer than 2 values on
    a side or no spread on either."""
    from scipy import stats

    difference = statistics.mean(a) - statistics.mean(b)
    if min(len(a), len(b)) < 2 or (statistics.stdev(a) == 0 and statistics.stdev(b) == 0):
        return difference, float("nan")
    return difference, float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def difference_table(reference: str, runs, columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of ``reference`` minus each other run: per (section, key) of ``columns``, the
    difference of the means over seeds and Welch's p-value (no correction for the several comparisons).

    ``runs``: (name, [metrics per seed]) pairs as in ``results_table``; the reference is one of the names.
    """
    runs = dict(runs)
    if reference not in runs:
        return ""

    def values(name, section, key):
        return [m[section][key] for m in runs[name] if m.get(section, {}).get(key) is not None]

    head = ["against", *(f"{section} {key}" for section, key in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in runs:
        if name == reference:
            continue
        cells = []
        for section, key in columns:
            a, b = values(reference, section, key), values(name, section, key)
            if not a or not b:
                cells.append("")
                continue
            difference, p = welch(a, b)
            cells.append(f"{difference:+.4f} (p {p:.3f})" if p == p else f"{difference:+.4f}")
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)

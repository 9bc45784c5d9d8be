"""Markdown tables of evaluated runs (``eval.py --compare``, ``scripts/results.py``)."""

from __future__ import annotations


def results_table(runs) -> str:
    """Markdown tables of coherence, latent accuracy, log-likelihood and FID (one each), a row per (name, metrics)."""
    tables = []
    for section, title in (
        ("coherence", "Coherence"),
        ("latent_accuracy", "Latent accuracy"),
        ("log_likelihood", "Log-likelihood (nats)"),
        ("fid", "FID in the scoring CNN's features (lower is closer to the real images)"),
    ):
        columns = []
        for _, m in runs:
            columns += [k for k, v in m.get(section, {}).items() if isinstance(v, float) and k not in columns]
        if not columns:
            continue
        head = ["run", "params", *columns]
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, m in runs:
            values = [m.get(section, {}).get(k) for k in columns]
            cells = [
                "" if v is None else (f"{v:.2f}" if section in ("log_likelihood", "fid") else f"{v:.4f}")
                for v in values
            ]
            lines.append("| " + " | ".join([name, f"{m.get('params', 0):,}", *cells]) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)

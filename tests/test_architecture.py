"""docs/ARCHITECTURE.md holds: the layers import only what it allows, and a toy model added by its steps
trains, resumes its options check and evaluates."""

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mvae_jax"

# Module -> the mvae_jax modules it must not import (docs/ARCHITECTURE.md, "The layers").
HIGHER = (
    "mvae_jax.models",
    "mvae_jax.networks",
    "mvae_jax.data",
    "mvae_jax.training",
    "mvae_jax.evaluation",
    "mvae_jax.cli",
    "mvae_jax.config",
    "mvae_jax.classifiers",
    "mvae_jax.figures",
    "mvae_jax.adversarial",
)
FORBIDDEN = {
    "distributions.py": HIGHER,
    "losses.py": HIGHER,
    "modality.py": HIGHER,
    "networks.py": tuple(h for h in HIGHER if h != "mvae_jax.networks"),
    "convolution.py": HIGHER,
    "models": tuple(h for h in HIGHER if h not in ("mvae_jax.models", "mvae_jax.networks", "mvae_jax.adversarial")),
    "data": (
        "mvae_jax.models",
        "mvae_jax.networks",
        "mvae_jax.training",
        "mvae_jax.evaluation",
        "mvae_jax.cli",
        "mvae_jax.distributions",
        "mvae_jax.losses",
    ),
    "training": ("mvae_jax.cli", "mvae_jax.evaluation"),
    "evaluation": ("mvae_jax.cli", "mvae_jax.training"),
    "api.py": ("mvae_jax.cli",),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_layers_import_only_what_the_architecture_allows(part):
    files = [PACKAGE / part] if part.endswith(".py") else sorted((PACKAGE / part).rglob("*.py"))
    for path in files:
        bad = sorted(i for i in _imports(path) for f in FORBIDDEN[part] if i == f or i.startswith(f + "."))
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"
    if part in ("distributions.py", "losses.py", "modality.py", "data"):
        for path in files:
            assert not any(i.startswith("flax") for i in _imports(path)), path


@pytest.mark.slow
def test_a_toy_model_added_by_the_documented_steps_trains_and_evaluates(tiny_config, tmp_path, monkeypatch):
    """Step 1: a module-like build with OPTIONS; step 2: register it; then train.py's path and eval work."""
    from mvae_jax import distributions, evaluation, losses, models, training
    from mvae_jax.config import Config
    from mvae_jax.models.base import KL_WARMUP_EPOCHS, Experts, JointEncoder, Model, check_present

    # Step 1: the objective. "toy": the joint ELBO alone (paper Eq. 1), subsets through the product of experts.
    OPTIONS = (KL_WARMUP_EPOCHS,)

    def build(config, modalities):
        names = tuple(m.name for m in modalities)
        joint, experts = JointEncoder(config, modalities), Experts(config, modalities)

        def init(rng):
            k_joint, k_enc, k_dec = jax.random.split(rng, 3)
            return {**joint.init(k_joint), **experts.init(k_enc, k_dec)}

        def encode(params, batch, present):
            present = check_present(present, names)
            if present == names:
                return joint.encode(params, batch)
            return distributions.product_of_experts(*experts.encode_stack(params, batch, present), prior_expert=True)

        def loss(params, batch, rng, epoch=0, beta=float(config.beta)):
            kl_beta = losses.kl_weight(beta, epoch, config.kl_warmup_epochs)
            elbo, terms = losses.multimodal_elbo(
                rng, joint.encode(params, batch), lambda z: experts.decode(params, z), batch, modalities, kl_beta
            )
            # the unimodal experts learn from the joint posterior, JMVAE-kl style
            target = jax.lax.stop_gradient(joint.encode(params, batch))
            kls = losses.kl_to_experts(target, {n: experts.encode(params, batch, n) for n in names})
            return {**terms, "elbo": elbo, "loss": -elbo + sum(kls.values())}

        return Model("toy", tuple(modalities), init, loss, encode, experts.decode)

    # Step 2: register it.
    monkeypatch.setitem(models.MODELS, "toy", build)
    monkeypatch.setitem(models.OPTIONS, "toy", OPTIONS)

    config = Config(**{**tiny_config.to_dict(), "model": "toy", "workdir": str(tmp_path / "toy")})
    state = training.train_and_evaluate(config)
    assert int(state.epoch) == 2 and training.saved_epochs(config.workdir) == [1, 2]
    with pytest.raises(ValueError, match="alpha=0.5 applies to model jmvae only, not to model='toy'"):
        Config(model="toy", alpha=0.5).validate()
    Config(model="toy", kl_warmup_epochs=3).validate()  # its declared option is accepted

    _, model, restored = training.restore_model(config.workdir)
    from mvae_jax.data import load_dataset

    dataset = load_dataset(config)
    test = {k: v[:20] for k, v in dataset.test.items()}
    latent = evaluation.latent_accuracy(
        model, restored.params, dataset.train, dataset.labels("train"), test, dataset.labels("test")[:20]
    )
    assert set(latent) == {"x", "y", "w", "x,y", "x,w", "y,w", "x,y,w"}
    mu = evaluation.posterior_means(model, restored.params, test, ("x", "w"))
    assert mu.shape == (20, 4) and np.all(np.isfinite(mu))
    assert jnp.all(jnp.isfinite(jnp.asarray(jax.tree_util.tree_leaves(restored.params)[0])))

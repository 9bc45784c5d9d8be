"""Settings as files: the recipes of configs/ (``train.py --config=``), and config.json files saved by the
version before the option blocks, kept as fixtures: each still loads to the same settings and builds the
same parameters."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

from mvae_jax import config as config_lib
from mvae_jax import recipes
from mvae_jax.data import DATASETS
from mvae_jax.models import get_model
import train

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "configs").glob("*.py"))
SAVED = sorted(
    p for p in (Path(__file__).parent / "fixtures" / "saved_configs").glob("*.json") if ".shapes" not in p.name
)


def test_the_published_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"jmvae_mnist_label", "mvae_mnist_label", "trimodal_results", "mopoe_polymnist"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_each_recipe_loads_validates_and_says_its_command_result_and_time(path):
    """The docstring starts with what it is, then the command that runs it; it says the result and the time.
    Its settings make valid runs (one per member of a sweep)."""
    doc = path.read_text().split('"""')[1]
    assert f"python train.py --config=configs/{path.name}" in doc
    assert "Expected" in doc and "Time:" in doc
    settings = recipes.load(path)
    flags = {**settings, "model": settings.get("model", "jmvae")}
    for c in train.configs_from_flags({**flags, "workdir": "runs/recipe"}):
        c.validate(given=settings)


def test_the_documented_recipes_are_the_files():
    """docs/recipes.md's MVAE and JMVAE recipes as long command lines give the files' settings."""
    jmvae = recipes.load(ROOT / "configs/jmvae_mnist_label.py")
    parsed = vars(
        train.make_parser().parse_args(
            "--model=jmvae --dataset=mnist_label --latent_dim=64 --batch_size=100 --epochs=500 "
            "--kl_warmup_epochs=200 --alpha=0.1".split()
        )
    )
    assert {k: parsed[k] for k in jmvae} == jmvae


@pytest.mark.slow  # a training run: the everyday tier stays under 4 minutes
def test_a_recipe_trains_with_flags_overriding_it(tiny_data_dir, tmp_path):
    recipe = tmp_path / "tiny.py"
    recipe.write_text(
        '"""A tiny recipe."""\n\n\ndef get_config():\n'
        '    return {"model": "telbo", "hidden_dims": [16], "latent_dim": 3, "batch_size": 20, "epochs": 5,\n'
        '            "likelihood_weights": (1, 1, 5)}\n'
    )
    workdir = tmp_path / "run"
    train.main([f"--config={recipe}", f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", "--epochs=1"])
    saved = config_lib.load_config(workdir)
    assert (saved.model, saved.hidden_dims, saved.latent_dim, saved.likelihood_weights) == (
        "telbo",
        (16,),
        3,
        (1.0, 1.0, 5.0),
    )
    assert saved.epochs == 1  # the flag, not the recipe's 5


@pytest.mark.parametrize(
    "body, message",
    [
        (None, "no such file; the recipes in configs/ are"),
        ("x = 1\n", "defines no get_config()"),
        ("def get_config():\n    return [1]\n", "returned a list, not a dict"),
        ("def get_config():\n    return {'betta': 2.0}\n", "unknown settings ['betta']"),
        (
            "def get_config():\n    return {'hidden_dims': 64}\n",
            "hidden_dims=64 is invalid; allowed: a list of integers",
        ),
        ("def get_config():\n    return {'seed': (1, 1)}\n", "seed=(1, 1) is invalid; allowed: one value or distinct"),
        ("import not_a_module\n", "the file does not run (ModuleNotFoundError"),
    ],
)
def test_a_bad_recipe_is_named_before_anything_is_written(tmp_path, capsys, body, message):
    recipe = tmp_path / "recipe.py"
    if body is not None:
        recipe.write_text(body)
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        train.main([f"--config={recipe}", f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and str(recipe) in err and message in err, err
    assert not workdir.exists()


def _shapes(tree) -> dict[str, list[int]]:
    return {jax.tree_util.keystr(p): list(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("path", SAVED, ids=lambda p: p.stem)
def test_a_config_saved_before_the_option_blocks_loads_the_same_and_builds_the_same_parameters(path, tmp_path):
    """One saved config.json of each model and data set, an adversarial run and a sweep member, written by the
    version before the options moved beside their code (with the shapes of the parameters its model built)."""
    (tmp_path / config_lib.CONFIG_FILE).write_text(path.read_text())
    loaded = config_lib.load_config(tmp_path)
    saved, now = json.loads(path.read_text()), loaded.to_dict()
    # Options added since (train_examples, plugins, image_likelihood, tc_alpha, private_dim, num_clusters,
    # dmvae_private_dim, missing, missing_seed, missing_eval, drop_incomplete, tracker, tracker_project, JNF's
    # jnf_*): their defaults.
    newer = set(now) - set(saved)
    assert now == {**{k: v for k, v in config_lib.Config().to_dict().items() if k in newer}, **saved}
    assert newer <= {
        "train_examples", "plugins", "image_likelihood", "tc_alpha", "private_dim", "num_clusters", "dmvae_private_dim",
        "missing", "missing_seed", "missing_eval", "drop_incomplete", "tracker", "tracker_project",
        "jnf_warmup", "jnf_flow_layers", "jnf_flow_width", "jnf_flow_depth", "jnf_hmc_steps", "jnf_leapfrog_steps",
        "jnf_step_size", "jnf_dcca_epochs", "jnf_dcca_dim", "optimizer",
    }  # fmt: skip
    model = get_model(loaded, DATASETS[loaded.dataset].modalities(loaded))
    built = _shapes(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    assert built == json.loads(path.with_suffix(".shapes.json").read_text())


def test_a_config_saved_before_an_option_existed_gets_the_value_it_trained_with(tmp_path):
    """An option's legacy value applies where its block is in use: pemvae's sampling and unimodal weight
    before docs/PEMVAE.md, the conv discriminator of adversarial runs before --disc_network."""
    old = json.loads((Path(__file__).parent / "fixtures/saved_configs/pemvae_trimodal_adversarial.json").read_text())
    for key in ("subset_sampling", "unimodal_weight", "disc_network", "num_modalities"):
        del old[key]
    loaded = config_lib.Config.from_dict(old)
    assert (loaded.subset_sampling, loaded.unimodal_weight, loaded.disc_network) == ("random", 1.0, "conv")
    assert loaded.num_modalities == 5  # no legacy value: the default
    jmvae = config_lib.Config.from_dict({"model": "jmvae"})
    assert (jmvae.subset_sampling, jmvae.unimodal_weight, jmvae.disc_network) == ("all", 3.0, "auto")

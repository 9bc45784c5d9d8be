"""Config validation: each bad value is named with what is allowed."""

from pathlib import Path

import pytest

from mvae_jax.config import Config, load_config, save_config


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("model", "vae", "cmvae, dmvae, jmvae, jnf, jnfdcca, mmvae, mmvaeplus, mopoe, mvae, mvtcae, pemvae, telbo"),
        ("dataset", "cifar", "trimodal"),
        ("beta", -1.0, "finite number > 0"),
        ("beta", float("nan"), "finite number > 0"),
        ("alpha", "0.1", "finite number >= 0"),
        ("learning_rate", 0.0, "number > 0"),
        ("epochs", 0, "integer >= 1"),
        ("batch_size", 1.5, "integer >= 1"),
        ("latent_dim", True, "integer >= 1"),
        ("seed", -3, "integer >= 0"),
        ("hidden_dims", (512, 0), "integers >= 1"),
        ("hidden_dims", (), "integers >= 1"),
        ("likelihood_weights", (1.0, 2.0), "one per modality x,y,w"),
        ("likelihood_weights", (1.0, -1.0, 1.0), "finite numbers >= 0"),
        ("num_subsets", -1, "integer >= 1 (mvae: >= 0"),
        ("num_samples", 0, "integer >= 1"),
        ("warmup_epochs", -1, "integer >= 0"),
        ("kl_warmup_epochs", -3, "integer >= 0"),
        ("dataset", "mnist", "mnist_label, polymnist, trimodal"),
    ],
)
def test_bad_values_are_named(field, value, allowed):
    model = {
        "likelihood_weights": "mvae",
        "num_subsets": "mvae",
        "num_samples": "mmvae",
        "warmup_epochs": "pemvae",
    }.get(field, "jmvae")
    with pytest.raises(ValueError) as err:
        Config(**{"model": model, field: value}).validate()
    assert f"{field}={value!r}" in str(err.value) and allowed in str(err.value)


def test_default_workdir_and_json_round_trip(tmp_path):
    config = Config(model="jmvae", beta=2.0)
    assert config.workdir == "runs/jmvae_beta2.0"
    config = Config(beta=2.0, hidden_dims=[64, 32], workdir=str(tmp_path))
    save_config(config, tmp_path)
    assert load_config(tmp_path) == config.validate()
    assert not list(tmp_path.glob("*.tmp"))


def test_differences_ignore_resumable_fields():
    a = Config(epochs=1, beta=1.0, workdir="a")
    assert a.differences(Config(epochs=9, workdir="b", data_dir="d")) == {}
    assert a.differences(Config(beta=2.0, workdir="a")) == {"beta": (1.0, 2.0)}


def test_unknown_keys_in_a_saved_config_are_an_error():
    with pytest.raises(ValueError, match="unknown config keys"):
        Config.from_dict({"beta": 1.0, "gamma": 2.0})


@pytest.mark.parametrize(
    "model,field,value",
    [
        ("jmvae", "num_samples", 3),
        ("mvae", "alpha", 1.0),
        ("telbo", "warmup_epochs", 2),
        ("mmvae", "num_subsets", 2),
        ("mmvae", "kl_warmup_epochs", 10),
    ],
)
def test_an_option_of_another_model_is_refused(model, field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r} applies to model .* only, not to model='{model}'"):
        Config(model=model, **{field: value}).validate()


def test_likelihood_weights_round_trip_and_default_to_one(tmp_path):
    config = Config(model="telbo", likelihood_weights=[1, 1, 50], workdir=str(tmp_path)).validate()
    save_config(config, tmp_path)
    assert load_config(tmp_path) == config
    assert config.likelihood_weight("xyw") == {"x": 1.0, "y": 1.0, "w": 50.0}
    assert Config().likelihood_weight("xyw") == {"x": 1.0, "y": 1.0, "w": 1.0}


def test_a_replaced_config_derives_its_workdir_again():
    """dataclasses.replace of a config whose workdir was derived derives it again; a given workdir stays."""
    import dataclasses
    import json

    assert dataclasses.replace(Config(), beta=2.0).workdir == "runs/jmvae_beta2.0"
    assert dataclasses.replace(Config(beta=2.0), model="mvae").workdir == "runs/mvae_beta2.0"
    assert dataclasses.replace(Config(workdir="mine"), beta=2.0).workdir == "mine"
    saved = Config.from_dict(json.loads(json.dumps(Config(beta=3.0).to_dict())))
    assert type(saved.to_dict()["workdir"]) is str
    assert dataclasses.replace(saved, beta=1.0).workdir == "runs/jmvae_beta3.0"  # a loaded workdir is a given one


@pytest.mark.parametrize(
    "given,message",
    [
        ({"model": "mvae", "alpha": 0.1}, "alpha=0.1 applies to model jmvae only"),
        ({"model": "jmvae", "num_subsets": 1}, "num_subsets=1 applies to model mvae or pemvae only"),
        ({"conv_widths": (32, 64, 128, 256)}, "conv_widths=(32, 64, 128, 256) applies to dataset celeba only"),
        ({"r1_weight": 1.0}, "r1_weight=1.0 applies to adversarial training only"),
    ],
)
def test_an_option_given_at_its_default_for_a_model_that_ignores_it_is_refused(given, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config(**given).validate(given=given)
    Config(**given).validate()  # without the names given, a default value cannot be told from an absent flag


def test_flag_table_help_and_config_agree():
    """Every Config field is a train.py flag with help and has a row in the documentation site's flag table
    (docs/hooks.py generates it from the option blocks when the site is built), whose default is the
    dataclass's; every model's options are Options, declared by a model that exists."""
    import dataclasses
    import importlib.util
    import re

    from mvae_jax import config as config_lib
    from mvae_jax.models import MODELS, OPTIONS
    from mvae_jax.options import Option
    import train

    spec = importlib.util.spec_from_file_location("hooks", Path(__file__).resolve().parent.parent / "docs/hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    table = hooks.train_flags_table()
    rows = dict(re.findall(r"^\| `--(\w+)` \| ([^|]*) \|", table, re.M))
    helps = {a.dest: a.help for a in train.make_parser()._actions}
    for field in dataclasses.fields(Config):
        assert helps.get(field.name) and config_lib.OPTIONS[field.name].help in helps[field.name], field.name
        assert field.name in rows, f"the flag table lacks --{field.name}"
        default, cell = field.default, rows[field.name].strip()
        if isinstance(default, bool) or default is None or default in ((), ""):
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        assert cell.strip("`") == shown, f"--{field.name}: the table says {cell}, the code {shown}"
    flags = {o[2:] for a in train.make_parser()._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"help"} <= set(rows), f"the flag table lacks {sorted(flags - {'help'} - set(rows))}"
    assert set(OPTIONS) == set(MODELS)
    assert all(isinstance(o, Option) and o.name in config_lib.OPTIONS for opts in OPTIONS.values() for o in opts)
    assert hooks.expand("before\n<!-- generated: train-flags -->\nafter") == f"before\n{table}\nafter"
    for name in MODELS:
        own = hooks.model_options_table(name)
        assert all(f"`--{o.name}`" in own for o in OPTIONS[name]), name
    with pytest.raises(ValueError, match="unknown generated table"):
        hooks.expand("<!-- generated: nonsense -->")


def test_data_dir_is_stored_absolute(tmp_path, monkeypatch):
    """A relative --data_dir (the docs' ../shared/datasets) is saved absolute: eval.py finds the data from
    any directory."""
    monkeypatch.chdir(tmp_path)
    config = Config(data_dir="../data", workdir=str(tmp_path / "run"))
    assert config.data_dir == str(tmp_path.parent / "data")
    save_config(config, tmp_path / "run")
    monkeypatch.chdir(tmp_path.parent)
    assert load_config(tmp_path / "run").data_dir == str(tmp_path.parent / "data")


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, monkeypatch, umask, mode):
    from mvae_jax import files

    monkeypatch.setattr(files, "_UMASK", umask)
    files.atomic_write_text(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


def test_a_model_block_naming_an_option_by_string_is_a_clear_error(tiny_config, monkeypatch):
    from mvae_jax import models

    monkeypatch.setitem(models.OPTIONS, "jmvae", ("kl_warmup_epochs",))
    with pytest.raises(TypeError, match=r"jmvae's OPTIONS holds 'kl_warmup_epochs', not an options.Option"):
        tiny_config.validate()

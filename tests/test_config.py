"""Config validation: each bad value is named with what is allowed."""

import pytest

from mvae_jax.config import Config, load_config, save_config


@pytest.mark.parametrize("field,value,allowed", [
    ("model", "vae", "jmvae"),
    ("dataset", "cifar", "trimodal"),
    ("beta", -1.0, "finite number >= 0"),
    ("beta", float("nan"), "finite number >= 0"),
    ("alpha", "0.1", "finite number >= 0"),
    ("learning_rate", 0.0, "number > 0"),
    ("epochs", 0, "integer >= 1"),
    ("batch_size", 1.5, "integer >= 1"),
    ("latent_dim", True, "integer >= 1"),
    ("seed", -3, "integer >= 0"),
    ("hidden_dims", (512, 0), "integers >= 1"),
    ("hidden_dims", (), "integers >= 1"),
])
def test_bad_values_are_named(field, value, allowed):
    with pytest.raises(ValueError) as err:
        Config(**{field: value}).validate()
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

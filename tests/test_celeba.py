"""CelebA: the official folder layout, tensorflow-datasets under mock_data, and training on a stream."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from mvae_jax import errors, training
from mvae_jax.config import Config
from mvae_jax.data import celeba, load_dataset


def test_attribute_file_parses_the_minus_one_one_format(tmp_path):
    path = tmp_path / celeba.ATTRIBUTE_FILE
    path.write_text("2\nA B C \n000001.jpg -1  1 -1\n000002.jpg  1  1 -1\n")
    files, names, values = celeba.parse_attribute_file(path)
    assert files == ["000001.jpg", "000002.jpg"] and names == ["A", "B", "C"]
    np.testing.assert_array_equal(values, [[0, 1, 0], [1, 1, 0]])


@pytest.mark.parametrize(
    "text, line",
    [
        ("x\nA\n", 1),
        ("1\nA B\n000001.jpg 1 0\n", 3),
        ("1\nA B\n000001.jpg 1\n", 3),
        ("2\nA B\n000001.jpg 1 1\n\n000002.jpg 1 x\n", 5),
    ],
)
def test_attribute_file_errors_name_the_line(tmp_path, text, line):
    path = tmp_path / celeba.ATTRIBUTE_FILE
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{celeba.ATTRIBUTE_FILE}:{line}:"):
        celeba.parse_attribute_file(path)


def test_folder_source_shapes_range_attributes_and_splits(tiny_celeba_dir):
    config = Config(dataset="celeba", data_dir=str(tiny_celeba_dir), attributes=("Male", "Smiling"))
    ds = load_dataset(config)
    assert ds.is_streamed and ds.num_train == 16 and len(ds.test) == 4
    assert [m.shape for m in ds.modalities] == [(64, 64, 3), (2,)]
    test = ds.test.take(10)
    assert test["image"].shape == (4, 64, 64, 3) and test["image"].dtype == np.float32
    assert 0.0 <= test["image"].min() and test["image"].max() <= 1.0
    # Test = the last 4 files (partition 2), in file order; attributes are the chosen columns, 1 = has it.
    _, _, values = celeba.parse_attribute_file(tiny_celeba_dir / celeba.ATTRIBUTE_FILE)
    columns = [celeba.ATTRIBUTES.index("Male"), celeba.ATTRIBUTES.index("Smiling")]
    np.testing.assert_array_equal(test["attributes"], values[-4:][:, columns])
    # The image of a male has the bright red channel the fixture gave it (survives crop, resize and JPEG).
    red = test["image"][..., 0].mean(axis=(1, 2))
    assert np.all((red > 0.6) == (test["attributes"][:, 0] == 1))
    # Training batches: shuffled by the seed, each training image once per epoch.
    first = [b["attributes"] for b in ds.train.batches(4, seed=1)]
    again = [b["attributes"] for b in ds.train.batches(4, seed=1)]
    assert len(first) == 4 and all(np.array_equal(a, b) for a, b in zip(first, again))


def test_unknown_attribute_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not CelebA attributes.*valid: 5_o_Clock_Shadow"):
        Config(dataset="celeba", attributes=("Female",)).validate()
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.txt"):
        load_dataset(Config(dataset="celeba", data_dir=str(tmp_path)))
    (tmp_path / celeba.ATTRIBUTE_FILE).write_text("0\nA\n")
    with pytest.raises(FileNotFoundError, match="lacks img_align_celeba/, list_eval_partition.txt"):
        load_dataset(Config(dataset="celeba", data_dir=str(tmp_path)))


def test_tfds_source_under_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        streams = celeba.tfds_streams(("Heavy_Makeup", "Male"), download=False)
        batch = next(streams["train"].batches(3, seed=0))
    assert batch["image"].shape == (3, 64, 64, 3) and batch["attributes"].shape == (3, 2)
    assert set(np.unique(batch["attributes"])) <= {0.0, 1.0}
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["jmvae", "pemvae"])
def test_training_on_the_stream_writes_checkpoints(tiny_celeba_dir, tmp_path, model):
    config = Config(
        model=model,
        dataset="celeba",
        data_dir=str(tiny_celeba_dir),
        workdir=str(tmp_path / "run"),
        conv_widths=(4, 8, 8, 8),
        hidden_dims=(16,),
        latent_dim=4,
        batch_size=4,
        epochs=2,
        warmup_epochs=1 if model == "pemvae" else Config.warmup_epochs,
    )
    state = training.train_and_evaluate(config)
    assert int(state.epoch) == 2 and int(state.step) == 8
    assert training.Checkpoints(config.workdir).all_steps() == [1, 2]
    _, _, restored = training.restore_model(config.workdir)
    for a, b in zip(jax.tree_util.tree_leaves(restored.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if model == "jmvae":  # stopped after step 1 of epoch 2, the stream resumes past the batches done
        stopped, asked = dataclasses.replace(config, workdir=str(tmp_path / "stopped")), []
        with pytest.raises(errors.Interrupted, match="interrupted in epoch 2 after step 1 of 4"):
            training.train_sweep([stopped], stop=lambda: asked.append(1) or len(asked) >= 4)
        resumed = training.train_and_evaluate(stopped)
        for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _identity_model():
    """q(z | attributes) = N(attributes, e^-30), p(attributes | z) = Bernoulli(sigmoid(30)): z copies its input."""
    import jax.numpy as jnp

    from mvae_jax.modality import Modality
    from mvae_jax.models import Model

    modalities = (Modality("image", (4, 4, 3), "bernoulli"), Modality("attributes", (3,), "bernoulli"))

    def encode(params, batch, present):
        x = batch["attributes"]
        return x, jnp.full_like(x, -30.0)

    def decode(params, z, names=None):
        out = {"attributes": jnp.full(z.shape, 30.0), "image": jnp.zeros((*z.shape[:-1], 4, 4, 3))}
        return {n: out[n] for n in (names or out)}

    return Model("identity", modalities, lambda rng: {}, None, encode, decode)


def test_query_keeps_named_attributes_and_imputes_the_rest():
    from mvae_jax import evaluation

    model = _identity_model()
    values, named = evaluation.parse_query(
        "Male=0,Smiling", ("Male", "Smiling", "Young"), celeba.ATTRIBUTES, celeba.QUERY_ALIASES
    )
    np.testing.assert_array_equal(values, [0, 1, 0])
    np.testing.assert_array_equal(named, [1, 1, 0])
    rng = jax.random.PRNGKey(0)
    fill = evaluation.query_latents(model, {}, rng, values, named, "attributes", 5, 0)
    np.testing.assert_allclose(fill, [[0, 1, 0.5]] * 5, atol=1e-5)  # no steps: the missing one at 1/2
    chain = evaluation.query_latents(model, {}, rng, values, named, "attributes", 5, 3)
    np.testing.assert_allclose(chain, [[0, 1, 1]] * 5, atol=1e-5)  # imputed from p(Young | z) = 1; named ones kept
    images = evaluation.query_images(model, {}, rng, values, named, 6, 2)
    assert set(images) == {"image"} and images["image"].shape == (6, 4, 4, 3)


@pytest.mark.parametrize(
    "query, message",
    [
        ("Femal", "unknown attribute 'Femal'; valid: .*Male.*aliases Female"),
        ("Female,Male", "asks for Male=1 and Male=0"),
        ("Young", "does not model 'Young'"),
        ("Smiling=yes", "must be 0 or 1"),
    ],
)
def test_query_errors(query, message):
    from mvae_jax import evaluation

    with pytest.raises(ValueError, match=message):
        evaluation.parse_query(query, ("Male", "Smiling"), celeba.ATTRIBUTES, celeba.QUERY_ALIASES)


@pytest.mark.slow
def test_eval_query_grid_samples_and_compare(tiny_celeba_dir, tmp_path, capsys):
    import eval as eval_cli

    base = Config(
        model="mvae",
        dataset="celeba",
        data_dir=str(tiny_celeba_dir),
        conv_widths=(4, 8, 8, 8),
        hidden_dims=(16,),
        latent_dim=4,
        batch_size=8,
        epochs=1,
        attributes=("Male", "Heavy_Makeup"),
    )
    runs = [Config(**{**base.to_dict(), "beta": b, "workdir": str(tmp_path / f"b{b}")}) for b in (0.5, 2.0)]
    training.train_sweep(runs)
    cnn = f"--classifier_dir={tmp_path / 'cnn'}"
    for run in runs:
        eval_cli.main([f"--workdir={run.workdir}", "--query=Female,Heavy_Makeup", "--query_samples=8", cnn])
    out = tmp_path / "eval" / "metrics.json"
    eval_dir = tmp_path / "b0.5" / "eval"
    assert (eval_dir / "query_Female-Heavy_Makeup.png").stat().st_size > 1000
    # The attribute CNN (trained once on the 16 training faces, cached) scores the 8 generated faces and 8 from
    # the prior; each rate is a count out of 8.
    query = json.loads((eval_dir / "metrics.json").read_text())["queries"]["Female,Heavy_Makeup"]
    assert set(query) == {"figure", "samples", "steps", "carried", "prior", "scorer"}
    for which in ("carried", "prior"):
        rates = query[which]["image"]
        assert set(rates) == {"Male=0", "Heavy_Makeup=1", "all"}
        assert all(8 * r == int(8 * r) and 0 <= r <= 1 for r in rates.values())
        assert rates["all"] <= min(rates["Male=0"], rates["Heavy_Makeup=1"])
    scorer = query["scorer"]["celeba/image"]
    assert set(scorer["attribute_accuracy"]) == {"Male", "Heavy_Makeup"} and scorer["test_examples"] == 4
    assert len(list((tmp_path / "cnn").glob("celeba-image-*/info.json"))) == 1  # one scorer for both runs
    # FID in the attribute CNN's features (CelebA has no class scorer), the split read from its stream.
    eval_cli.main([f"--workdir={runs[0].workdir}", "--sections=fid", cnn, "--fid_points=4"])
    fid = json.loads((eval_dir / "metrics.json").read_text())["fid"]
    assert fid["points"] == 4 and {"attributes->image", "joint->image", "prior->image"} <= set(fid)
    assert "queries" in json.loads((eval_dir / "metrics.json").read_text())  # kept beside the new section
    assert (eval_dir / "samples.png").is_file() and (eval_dir / "metrics.json").is_file()
    eval_cli.main(["--compare", runs[0].workdir, runs[1].workdir, f"--out={tmp_path / 'cmp.png'}"])
    assert (tmp_path / "cmp_samples.png").is_file() and not out.exists()
    for argv, message in (
        (["--query=Smiling"], "does not model 'Smiling'"),
        (["--sections=coherence"], "require class labels"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            eval_cli.main([f"--workdir={runs[0].workdir}", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err

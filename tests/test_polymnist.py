"""PolyMNIST: the build by the published procedure, the official files, the cache and its checks, the contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mvae_jax.config import Config
from mvae_jax.data import DATASETS, idx, load_dataset, polymnist, sources


def write_backgrounds(folder: Path, count: int = 3, seed: int = 0) -> list[Path]:
    """``count`` random RGB backgrounds of different sizes, JPEG and PNG (the shared folder has both)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in range(count):
        pixels = rng.integers(0, 256, (40 + 3 * m, 50 + 5 * m, 3), dtype=np.uint8)
        path = folder / f"{m:02d}background.{'png' if m == 1 else 'jpg'}"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(path)
    return paths


def write_tiny_polymnist_sources(root: Path, backgrounds: int = 3, seed: int = 0) -> Path:
    """DIR/mnist (60 + 20 random digits, each its own pattern of pixels above 128) and DIR/polymnist_backgrounds."""
    rng = np.random.default_rng(seed)
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for split, n in (("train", 60), ("test", 20)):
        images_file, labels_file = sources.IDX_FILES[split]
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = np.where(
            rng.random((n, 28, 28)) < 0.2, rng.integers(129, 256, (n, 28, 28)), rng.integers(0, 129, (n, 28, 28))
        )
        idx.write_idx(folder / f"{images_file}.gz", images.astype(np.uint8))
        idx.write_idx(folder / f"{labels_file}.gz", labels)
    write_backgrounds(root / polymnist.BACKGROUNDS_DIR, backgrounds)
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MVAE_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data" / "polymnist"


@pytest.fixture
def sources_dir(tmp_path) -> Path:
    return write_tiny_polymnist_sources(tmp_path / "data")


def config(data_dir, **kw) -> Config:
    return Config(dataset="polymnist", data_dir=str(data_dir), num_modalities=kw.pop("num_modalities", 2), **kw)


def test_compose_crops_the_background_and_inverts_the_colours_where_the_digit_is():
    background = np.random.default_rng(1).integers(0, 256, (35, 40, 3), dtype=np.uint8)
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, 5:9, 3:20] = 200  # above the threshold: inverted
    digits[1, 10, 10] = 128  # not above it: kept
    rng, again = np.random.default_rng(7), np.random.default_rng(7)
    out = polymnist.compose(digits, background, rng)
    left, top = again.integers(0, 40 - 28, 2), again.integers(0, 35 - 28, 2)
    for k in range(2):
        crop = background[top[k] : top[k] + 28, left[k] : left[k] + 28]
        expected = np.where((digits[k] > 128)[..., None], 255 - crop, crop)
        np.testing.assert_array_equal(out[k], expected)
    assert out.dtype == np.uint8 and out.shape == (2, 28, 28, 3)


def test_the_build_pairs_by_class_with_a_permutation_per_modality(cache, sources_dir):
    dataset = load_dataset(config(sources_dir))
    mnist = sources.load_image_classification("mnist", sources_dir)
    assert set(dataset.train) == {"m0", "m1"} and dataset.train["m0"].shape == (60, 28, 28, 3)
    assert dataset.test["m1"].shape == (20, 28, 28, 3) and dataset.train["m0"].dtype == np.float32
    labels = dataset.labels("train")
    # by class, then index, in one fixed permutation of that order
    order = np.random.default_rng(polymnist.ORDER_SEED).permutation(60)
    np.testing.assert_array_equal(labels, np.sort(mnist["train"][1])[order])
    np.testing.assert_array_equal(np.sort(dataset.labels("test")), np.sort(mnist["test"][1]))
    assert not np.array_equal(labels, np.sort(labels))
    images, mnist_labels = mnist["train"][0][..., 0], mnist["train"][1]
    for name in ("m0", "m1"):
        # every example is a crop of its background with a digit of its class inverted, each MNIST image once
        used = []
        for k in range(60):
            same_class = np.flatnonzero(mnist_labels == labels[k])
            found = [j for j in same_class if _drawn_from(dataset.train[name][k], images[j], int(name[1]), sources_dir)]
            assert found, f"{name} example {k} is no crop of its background with a class-{labels[k]} digit"
            used.append(found[0])
        assert len(set(used)) == 60
    assert not np.array_equal(dataset.train["m0"], dataset.train["m1"])


def _drawn_from(image, digit, m, root) -> bool:
    """Whether ``image`` (28, 28, 3) in [0, 1] is a crop of background m with ``digit``'s pixels > 128 inverted."""
    background = polymnist.read_background(polymnist.background_files(root / polymnist.BACKGROUNDS_DIR)[m])
    pixels = np.rint(image * 255).astype(np.uint8)
    restored = np.where((digit > 128)[..., None], 255 - pixels, pixels)  # inverting twice gives the crop back
    h, w, _ = background.shape
    windows = np.lib.stride_tricks.sliding_window_view(background, (28, 28, 3))[: h - 28, : w - 28, 0]
    return bool(np.any(np.all(windows == restored, axis=(2, 3, 4))))


def test_the_build_is_deterministic_cached_and_modalities_do_not_depend_on_their_number(
    cache, sources_dir, monkeypatch
):
    two = load_dataset(config(sources_dir))
    three = load_dataset(config(sources_dir, num_modalities=3))
    for name in ("m0", "m1"):
        np.testing.assert_array_equal(two.train[name], three.train[name])
    assert "m2" in three.train and two.fingerprints == {k: three.fingerprints[k] for k in ("m0", "m1")}
    assert len(list(cache.glob("*/manifest.json"))) == 3  # one folder per modality, m0 and m1 reused
    monkeypatch.setattr(polymnist, "build_modality", lambda *a: pytest.fail("rebuilt although cached"))
    again = load_dataset(config(sources_dir))
    np.testing.assert_array_equal(again.test["m1"], two.test["m1"])
    assert again.fingerprints == two.fingerprints


def test_a_damaged_cache_array_is_named(cache, sources_dir):
    load_dataset(config(sources_dir))
    array = sorted(cache.glob("m1-*/train.npy"))[0]
    data = bytearray(array.read_bytes())
    data[-1] ^= 0xFF
    array.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{array}.*not the .* its manifest records.*delete"):
        load_dataset(config(sources_dir))


def test_validation_is_held_out_with_its_labels(cache, sources_dir):
    dataset = load_dataset(config(sources_dir, validation=12))
    assert dataset.num_train == 48 and len(dataset.validation["m0"]) == 12
    assert len(dataset.labels("validation")) == 12 and len(dataset.labels("train")) == 48
    data, labels = dataset.training_pairs()
    assert len(labels) == 60 and data["m1"].shape == (60, 28, 28, 3)


def write_official(root: Path, dataset, num_modalities: int) -> Path:
    """The official layout: <split>/m<m>/<i>.<digit>.png, i the index within the class (``dataset`` without a
    validation split, its examples in ``polymnist.ORDER_SEED``'s permutation of the class-sorted order)."""
    from PIL import Image

    for split in ("train", "test"):
        labels = dataset.labels(split)
        data = getattr(dataset, split)
        order = np.random.default_rng(polymnist.ORDER_SEED).permutation(len(labels))
        in_class_order = np.sort(labels)
        for m in range(num_modalities):
            folder = root / split / f"m{m}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, digit in enumerate(labels):
                i = order[k] - int(np.flatnonzero(in_class_order == digit)[0])
                Image.fromarray(np.rint(data[f"m{m}"][k] * 255).astype(np.uint8)).save(folder / f"{i}.{digit}.png")
    return root


def test_the_official_files_are_read_and_paired_by_name(cache, sources_dir, tmp_path):
    built = load_dataset(config(sources_dir))
    official = write_official(tmp_path / "official" / "PolyMNIST", built, 2)
    read = load_dataset(config(official.parent))
    for name in ("m0", "m1"):
        np.testing.assert_array_equal(read.test[name], built.test[name])
        np.testing.assert_array_equal(read.train[name], built.train[name])
    np.testing.assert_array_equal(read.labels("train"), built.labels("train"))
    assert read.fingerprints["m0"] != built.fingerprints["m0"]


def test_bad_official_files_are_named(cache, sources_dir, tmp_path):
    from PIL import Image

    built = load_dataset(config(sources_dir))
    root = write_official(tmp_path / "official", built, 2)
    (root / "test" / "m1" / "0.3.png").unlink()
    with pytest.raises(ValueError, match=r"test/m1 and .*test/m0 hold different file names.*0\.3\.png"):
        load_dataset(config(root))
    Image.fromarray(np.zeros((30, 28, 3), np.uint8)).save(root / "test" / "m1" / "0.3.png")
    with pytest.raises(ValueError, match=r"test/m1/0\.3\.png: an image of 28x30, expected 28x28 RGB"):
        load_dataset(config(root))
    (root / "test" / "m1" / "0.3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"test/m1/0\.3\.png: not a readable PNG"):
        load_dataset(config(root))
    (root / "train" / "m0" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"train/m0/notes\.txt: not a PolyMNIST file name"):
        load_dataset(config(root))


def test_missing_sources_and_bad_settings_are_named(cache, tmp_path, sources_dir):
    with pytest.raises(ValueError, match="num_modalities=4 needs 4 background images in .* it has 3"):
        load_dataset(config(sources_dir, num_modalities=4))
    with pytest.raises(sources.DataNotFoundError, match="no PolyMNIST under data_dir=.*official files.*backgrounds"):
        load_dataset(config(tmp_path / "empty"))
    for bad in (1, 11):
        with pytest.raises(ValueError, match=f"num_modalities={bad} is invalid; allowed: an integer from 2 to 10"):
            config(sources_dir, num_modalities=bad).validate()
    with pytest.raises(ValueError, match="num_modalities=3 applies to dataset polymnist only"):
        Config(num_modalities=3).validate()
    idx.write_idx(sources_dir / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((20,), np.uint8))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: IDX magic number 2049, expected 2051"):
        load_dataset(config(sources_dir))


def test_the_contract_declares_labels_from_files_and_own_scorers():
    spec = DATASETS["polymnist"]
    cfg = Config(dataset="polymnist", num_modalities=3)
    assert spec.labelled and spec.label_modality is None and spec.labels == "files"
    assert tuple(spec.scorers_of([m.name for m in spec.modalities(cfg)])) == ("m0", "m1", "m2")
    assert all(s.own for s in spec.scorers.values()) and spec.splits == "held_out"
    assert [m.shape for m in spec.modalities(cfg)] == [(28, 28, 3)] * 3


@pytest.mark.slow  # over 7 s: the everyday tier stays under 4 minutes
def test_the_mopoe_networks_have_mopoe_parameter_counts():
    """Sutter et al. 2021's PolyMNIST encoder (3x3 convs 32-64-128, a dense layer, two heads) and decoder, latent
    512 as in their PolyMNIST runs: counted by hand from their ConvNetworksImgMMNIST.py."""
    import jax

    from mvae_jax.models import get_model
    from mvae_jax.networks import count_params

    cfg = Config(dataset="polymnist", model="mopoe", latent_dim=512, num_modalities=2)
    model = get_model(cfg, DATASETS["polymnist"].modalities(cfg))
    params = model.init(jax.random.PRNGKey(0))
    convs = (3 * 9 + 1) * 32 + (32 * 9 + 1) * 64 + (64 * 9 + 1) * 128
    encoder = convs + (2048 + 1) * 512 + 2 * (512 + 1) * 512
    decoder = (512 + 1) * 2048 + (128 * 9 + 1) * 64 + (64 * 9 + 1) * 32 + (32 * 9 + 1) * 3
    assert count_params(params["encoders"]["m0"]) == encoder == 1_667_648
    assert count_params(params["decoders"]["m1"]) == decoder == 1_143_747
    batch = {n: np.zeros((3, 28, 28, 3), np.float32) for n in ("m0", "m1")}
    assert model.decode(params, model.encode(params, batch, ("m0",))[0])["m1"].shape == (3, 28, 28, 3)


def test_a_scorer_of_the_own_split_is_trained_on_every_training_pair_cached_and_shipped_only_for_its_data(
    cache, sources_dir, tmp_path, monkeypatch
):
    from mvae_jax import classifiers

    dataset = load_dataset(config(sources_dir, validation=12))
    own = classifiers.OwnSplit(dataset, "m1")
    (train_images, train_labels), (test_images, _) = own.splits()["train"], own.splits()["test"]
    assert train_images.shape == (60, 28, 28, 3) and len(train_labels) == 60 and len(test_images) == 20
    assert own.fingerprint == classifiers.OwnSplit(load_dataset(config(sources_dir)), "m1").fingerprint
    assert own.fingerprint != classifiers.OwnSplit(dataset, "m0").fingerprint
    recipe = classifiers.Recipe(epochs=1, batch_size=20)
    params, info = classifiers.load_or_train("polymnist/m1", None, tmp_path / "cnn", recipe, data=own)
    assert info["data_sha256"] == own.fingerprint and 0.0 <= info["test_accuracy"] <= 1.0
    assert classifiers.predict(params, test_images).shape == (20,)
    monkeypatch.setattr(classifiers, "train_classifier", lambda *a, **k: pytest.fail("trained again"))
    _, again = classifiers.load_or_train("polymnist/m1", None, tmp_path / "cnn", recipe, data=own)
    assert again["test_accuracy"] == info["test_accuracy"]
    shipped = tmp_path / "shipped"
    digest = classifiers.save_weights(params, shipped / "polymnist-m1.npz")
    entry = {"file": "polymnist-m1.npz", "sha256": digest, "test_accuracy": 0.5, "data_sha256": own.fingerprint}
    (shipped / classifiers.SHIPPED_RECORD).write_text(json.dumps({"polymnist/m1": entry}))
    assert classifiers.load_shipped("polymnist/m1", shipped, data=own) is not None
    other = classifiers.OwnSplit(load_dataset(config(sources_dir, num_modalities=3)), "m2")
    assert classifiers.load_shipped("polymnist/m1", shipped, data=other) is None  # trained on other data


@pytest.mark.slow
def test_a_polymnist_run_trains_and_every_eval_section_runs(cache, sources_dir, tmp_path):
    """train.py then eval.py on 3 modalities with MoPoE's Laplace likelihood: labels from the files, scorers trained
    on the own split, coherence by the number of inputs (1 and 2) on the first 30 test pairs, every figure."""
    import eval as eval_cli
    import train

    workdir = tmp_path / "run"
    flags = [f"--data_dir={sources_dir}", "--num_modalities=3", f"--workdir={workdir}", "--validation=20"]
    train.main(
        ["--dataset=polymnist", "--model=mopoe", "--epochs=1", "--batch_size=20", "--latent_dim=4",
         "--image_likelihood=laplace", *flags]
    )  # fmt: skip
    line = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(line["loss"]) and line["loss"] > 3 * 28 * 28 * 3 * np.log(2 * 0.75)  # -log p >= 2352 log 1.5
    eval_cli.main(
        [f"--workdir={workdir}", "--classifier_epochs=1", f"--classifier_dir={tmp_path / 'cnn'}", "--prior_samples=50",
         "--tsne_points=20", "--fid_points=20", "--iw_samples=2", "--ll_points=10", "--coherence_points=30"]
    )  # fmt: skip
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert metrics["eval_flags"]["coherence_points"] == 30
    assert set(metrics["classifiers"]) == {"polymnist/m0", "polymnist/m1", "polymnist/m2"}
    assert len(metrics["coherence"]) == 3 * 2 + 3 + 3 + 1  # 1 input -> 2 targets, 2 inputs -> 1, joint, prior
    by_inputs = metrics["coherence_by_inputs"]
    assert set(by_inputs) == {"1", "2", "mean"}
    singles = [v for k, v in metrics["coherence"].items() if k.count(",") == 0 and "->" in k and "joint" not in k]
    assert by_inputs["1"] == pytest.approx(np.mean(singles))
    assert set(metrics["latent_accuracy"]) == {"m0", "m1", "m2", "m0,m1", "m0,m2", "m1,m2", "m0,m1,m2"}
    assert {"prior->m0", "m1,m2->m0", "joint->m2"} <= set(metrics["fid"])
    for figure in ("tsne.png", "cross_modal.png", "samples.png", "curves.png"):
        assert (workdir / "eval" / figure).stat().st_size > 2_000


@pytest.fixture(scope="session")
def real_polymnist(real_data_dir, tmp_path_factory):
    """PolyMNIST's m0 and m1 built from ../shared/datasets (MNIST and the backgrounds) into a cache of the
    session's own (two modalities: the build and the model cost 2/5 of five; m2..m4 are built by the same code)."""
    import os

    if not (real_data_dir / polymnist.BACKGROUNDS_DIR).is_dir():
        pytest.skip(f"no {real_data_dir / polymnist.BACKGROUNDS_DIR} to build PolyMNIST from")
    before = os.environ.get("MVAE_JAX_CACHE")
    os.environ["MVAE_JAX_CACHE"] = str(tmp_path_factory.mktemp("polymnist_cache"))
    try:
        yield load_dataset(Config(dataset="polymnist", data_dir=str(real_data_dir), num_modalities=2))
    finally:
        if before is None:
            os.environ.pop("MVAE_JAX_CACHE")
        else:
            os.environ["MVAE_JAX_CACHE"] = before


@pytest.mark.slow
def test_the_shipped_scorers_are_those_of_the_built_data_and_classify_its_test_split(real_polymnist):
    """The build here gives the data the shipped CNNs were trained on (their recorded fingerprint), and each
    classifies its modality's 10,000 test images (recorded 0.9849 and 0.9783; asserted >= 0.97)."""
    from mvae_jax import classifiers

    assert real_polymnist.num_train == 60_000 and np.bincount(real_polymnist.labels("test")).min() >= 892
    for m in ("m0", "m1"):
        shipped = classifiers.load_shipped(f"polymnist/{m}", data=classifiers.OwnSplit(real_polymnist, m))
        assert shipped is not None, f"the shipped polymnist/{m} scorer was trained on other data"
        params, info = shipped
        accuracy = classifiers.accuracy(params, real_polymnist.test[m], real_polymnist.labels("test"))
        assert accuracy == pytest.approx(info["test_accuracy"]) and accuracy >= 0.97


@pytest.mark.slow
def test_mopoe_learns_polymnist_classes_in_60_steps(real_polymnist, tmp_path, monkeypatch):
    """MoPoE (latent 32) on m0 and m1, trained 3 epochs on the first 2,560 real training examples: a logistic
    regression on the posterior means beats chance (0.1) on 1,000 test examples (measured 0.370 for q(z|m0), 0.452
    for q(z|m0,m1) on 2026-12-07; 0.358 and 0.433 after 4 epochs). Its cross-modal coherence is still at chance
    this early: that needs longer budgets."""
    import dataclasses

    from mvae_jax import training
    from mvae_jax.evaluation import metrics
    from mvae_jax.models import get_model

    n = 2560
    small = dataclasses.replace(
        real_polymnist,
        train={k: v[:n] for k, v in real_polymnist.train.items()},
        class_labels={**real_polymnist.class_labels, "train": real_polymnist.labels("train")[:n]},
    )
    monkeypatch.setattr(training.loop, "load_dataset", lambda config: small)
    config = Config(
        dataset="polymnist", model="mopoe", latent_dim=32, epochs=3, workdir=str(tmp_path / "run"), data_dir="unused"
    )
    state = training.train_and_evaluate(config)
    model = get_model(config, real_polymnist.modalities)
    test = {k: v[:1000] for k, v in real_polymnist.test.items()}
    scores = metrics.latent_accuracy(
        model, state.params, small.train, small.labels("train"), test, real_polymnist.labels("test")[:1000]
    )
    print({k: round(v, 3) for k, v in scores.items()})
    assert scores["m0"] >= 0.25 and scores["m0,m1"] >= 0.3


@pytest.mark.slow  # over 7 s: the everyday tier stays under 4 minutes
def test_the_tensorboard_grid_takes_image_modalities_of_different_shapes():
    """A gray 28x28 and an RGB 20x24 modality: every image padded to 28x28 and drawn on 3 channels."""
    import jax

    from mvae_jax import figures
    from mvae_jax.modality import Modality
    from mvae_jax.models import get_model

    modalities = (Modality("a", (28, 28, 1), "bernoulli", "conv"), Modality("b", (20, 24, 3), "bernoulli", "conv"))
    model = get_model(Config(model="mvae", latent_dim=4, conv_widths=(8, 8)), modalities)
    params = model.init(jax.random.PRNGKey(0))
    data = {"a": np.zeros((3, 28, 28, 1), np.float32), "b": np.ones((3, 20, 24, 3), np.float32)}
    grid = figures.cross_modal_grid(model, params, data, jax.random.PRNGKey(1), samples=2)
    assert grid.shape == (3 * 28, 2 * 3 * 28 + 4, 3) and 0.0 <= grid.min() and grid.max() <= 1.0


@pytest.mark.slow  # conv models compiled: about 15 s each
@pytest.mark.parametrize(
    "name", ["jmvae", "pemvae", "mmvae", "mvtcae", "mmvaeplus", "dmvae", "cmvae", "jnf", "jnfdcca"]
)
def test_every_kind_of_encoder_builds_on_polymnist_and_has_finite_gradients(name):
    """A joint encoder (jmvae; telbo's is the same), pemvae's fusion encoder and the unimodal experts (mmvae;
    mvae's and mopoe's are the same, and mopoe trains on PolyMNIST in the test above) take each modality
    through MoPoE's conv features; jnf adds its flows to jmvae's networks, jnfdcca conv DCCA embeddings."""
    import jax

    from mvae_jax.models import get_model

    cfg = Config(dataset="polymnist", model=name, num_modalities=2, latent_dim=4, hidden_dims=(8,), num_samples=2)
    model = get_model(cfg, DATASETS["polymnist"].modalities(cfg))
    params = model.init(jax.random.PRNGKey(0))
    batch = {n: np.random.default_rng(1).random((3, 28, 28, 3)).astype(np.float32) for n in ("m0", "m1")}
    grads = jax.grad(lambda p: model.loss(p, batch, jax.random.PRNGKey(2))["loss"].mean())(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    assert model.encode(params, batch, ("m1",))[0].shape == (3, 4)

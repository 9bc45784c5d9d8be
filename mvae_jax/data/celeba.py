"""CelebA: a 64x64 face image + its binary attributes, streamed from disk (Liu et al. 2015).

Modalities: ``image`` (64, 64, 3) in [0, 1], Bernoulli likelihood,
convolutional networks; ``attributes`` (k,) in {0, 1}, Bernoulli likelihood,
MLP networks: all 40 attributes in the file's order, or the run's
``--attributes`` list in the order given.

Images: the aligned 178x218 JPEGs, center-cropped to 148x148 and resized to
64x64 (bilinear). Splits: the official partition, 0 = train (162,770),
1 = validation (19,867), 2 = test (19,962).

Sources, in order: ``--data_dir`` holding the official files (itself, or
its ``celeba/`` folder):
    img_align_celeba/000001.jpg ...
    list_attr_celeba.txt      line 1: count; line 2: the 40 names; then
                              "000001.jpg -1  1 ..." (1 = has it, -1 = not)
    list_eval_partition.txt   "000001.jpg 0"
or else tensorflow-datasets ``celeb_a`` (prepared, or downloaded if its host
answers; the download often fails with a Google Drive quota page).

CelebA (about 200,000 images) is not loaded into memory: ``Stream`` reads it
with tf.data, decoding JPEGs in parallel and prefetching, one batch at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from mvae_jax import options as opt
from mvae_jax.data import sources
from mvae_jax.data.contract import OWN_SPLIT, DatasetSpec, Scorer
from mvae_jax.modality import Modality

log = logging.getLogger(__name__)

ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
IMAGE_SIZE = 64
CROP = 148
ORIGINAL_SHAPE = (218, 178, 3)
IMAGES_DIR = "img_align_celeba"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
# Names a --query may use for the absence of an attribute: "Female" means Male = 0.
QUERY_ALIASES = {"Female": ("Male", 0), "Old": ("Young", 0), "Beard": ("No_Beard", 0)}
QUERY_MODALITY = "attributes"  # the modality a --query names entries of
PARTITIONS = {"train": 0, "validation": 1, "test": 2}
SHUFFLE_BUFFER = 10_000  # tensorflow-datasets source only: the folder source shuffles its whole file list


def check_attributes(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` (empty = all 40) as a tuple; ValueError naming unknown or repeated ones and listing the valid ones."""
    names = tuple(names)
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"attributes {unknown} are not CelebA attributes; valid: {', '.join(ATTRIBUTES)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"attributes {repeated} are given more than once")
    return names or tuple(ATTRIBUTES)


def modalities(config) -> tuple[Modality, ...]:
    """The image and the run's attributes (``config.attributes``, all 40 if empty)."""
    return (
        Modality("image", (IMAGE_SIZE, IMAGE_SIZE, 3), "bernoulli", "conv"),
        Modality("attributes", (len(check_attributes(config.attributes)),), "bernoulli"),
    )


def parse_attribute_file(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """(file names, attribute names, values uint8 (n, attributes) in {0, 1}) of ``list_attr_celeba.txt``.

    ValueError naming the line of anything that does not parse.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(
            f"{path}: {len(lines)} lines; expected a count, a header of attribute names, then one line per image"
        )
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(f"{path}:1: {lines[0]!r} is not the number of images") from None
    names = lines[1].split()
    rows = [(number, line) for number, line in enumerate(lines[2:], start=3) if line.strip()]
    if len(rows) != count:
        raise ValueError(f"{path}: line 1 says {count} images, the file lists {len(rows)}")
    files, values = [], np.empty((count, len(names)), np.uint8)
    for i, (number, line) in enumerate(rows):
        fields = line.split()
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise ValueError(f"{path}:{number}: expected a file name and {len(names)} values of 1 or -1, got {line!r}")
        files.append(fields[0])
        values[i] = [v == "1" for v in fields[1:]]
    return files, names, values


def parse_partition_file(path: str | os.PathLike) -> dict[str, int]:
    """{file name: partition (0 train, 1 validation, 2 test)} of ``list_eval_partition.txt``.

    ValueError naming a bad line.
    """
    path = Path(path)
    out = {}
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{i + 1}: expected a file name and a partition 0, 1 or 2, got {line!r}")
        out[fields[0]] = int(fields[1])
    return out


def find_folder(data_dir: str | os.PathLike) -> Path | None:
    """The folder in the official layout: ``data_dir`` itself or ``data_dir/celeba``."""
    return next((folder for folder in _candidates(Path(data_dir)) if not _missing_files(folder)), None)


def _candidates(data_dir: Path) -> tuple[Path, Path]:
    return data_dir, data_dir / "celeba"


def _missing_files(folder: Path) -> list[str]:
    """The official files (the image folder with a trailing slash) that ``folder`` lacks."""
    return [
        f
        for f, there in (
            (IMAGES_DIR + "/", (folder / IMAGES_DIR).is_dir()),
            (ATTRIBUTE_FILE, (folder / ATTRIBUTE_FILE).is_file()),
            (PARTITION_FILE, (folder / PARTITION_FILE).is_file()),
        )
        if not there
    ]


def _what_is_missing(data_dir: Path) -> str:
    """The official files lacking in the first of ``data_dir`` and ``data_dir/celeba`` that holds some of them."""
    for folder in _candidates(data_dir):
        missing = _missing_files(folder)
        if len(missing) < 3:
            return f"{folder} has some of the official files but lacks {', '.join(missing)}"
    return (
        f"expected {IMAGES_DIR}/, {ATTRIBUTE_FILE} and {PARTITION_FILE} in it or in its celeba/ folder "
        "(the official layout)"
    )


def preprocess(image, attributes, columns: Sequence[int]):
    """tf: a uint8 (218, 178, 3) image -> float32 (64, 64, 3) in [0, 1]; attributes -> float32 of ``columns``."""
    tf = sources.import_tf()

    height, width = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (height - CROP) // 2, (width - CROP) // 2
    image = tf.image.crop_to_bounding_box(image, top, left, CROP, CROP)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (IMAGE_SIZE, IMAGE_SIZE), method="bilinear")
    image = tf.clip_by_value(image, 0.0, 1.0)
    return {"image": image, "attributes": tf.gather(tf.cast(attributes, tf.float32), list(columns))}


class Stream:
    """One split of a data set too large for memory, read in batches.

    ``source(order_seed)`` builds a tf.data pipeline of raw examples (a file
    name, encoded bytes), shuffled by ``order_seed`` or in file order for
    None; ``decode`` maps one raw example to a dict of float32 arrays.
    Decoding comes after the split into process shards, so that each process
    of a multi-host run decodes only the examples of its own devices.
    """

    def __init__(self, source: Callable[[int | None], object], decode: Callable, num_examples: int):
        self.source = source
        self.decode = decode
        self.num_examples = num_examples

    def __len__(self) -> int:
        return self.num_examples

    def batches(
        self,
        batch_size: int,
        seed: int | None = None,
        drop_remainder: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        skip: int = 0,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Batches {name: (batch_size / process_count, *shape) float32}, shuffled by ``seed`` (file order for None).

        The first ``skip`` batches of that order are left out, undecoded (the
        rest of an epoch that was interrupted).

        With ``process_count`` > 1, the global batches are those of a single
        process, and this process gets rows ``[i * b, (i + 1) * b)`` of each
        (``i = process_index``, ``b = batch_size / process_count``): stacked
        in process order, the shards are the single-process batch.
        """
        tf = sources.import_tf()
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} must be a multiple of the {process_count} processes")
        ds = self.source(seed).skip(skip * batch_size)
        if process_count > 1:
            local = batch_size // process_count
            full = (self.num_examples // batch_size - skip) * batch_size if drop_remainder else self.num_examples
            ds = ds.take(full).enumerate().filter(lambda i, _: (i % batch_size) // local == process_index)
            ds = ds.map(lambda _, example: example)
            batch_size = local
        ds = ds.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

    def take(self, n: int) -> dict[str, np.ndarray]:
        """The first ``n`` examples in file order, in memory: {name: (n, *shape)}."""
        tf = sources.import_tf()
        n = min(n, self.num_examples)
        ds = self.source(None).take(n).map(self.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        parts = list(ds.batch(1000).prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def folder_streams(folder: Path, attributes: Sequence[str]) -> dict[str, Stream]:
    """{"train", "validation", "test"} streams of the official files in ``folder``."""
    tf = sources.import_tf()
    files, names, values = parse_attribute_file(folder / ATTRIBUTE_FILE)
    if tuple(names) != tuple(ATTRIBUTES):
        raise ValueError(f"{folder / ATTRIBUTE_FILE}:2: attribute names {names} differ from CelebA's 40: {ATTRIBUTES}")
    partition = parse_partition_file(folder / PARTITION_FILE)
    missing = [f for f in files if f not in partition]
    if missing:
        raise ValueError(f"{folder / PARTITION_FILE} has no partition for {len(missing)} images, e.g. {missing[0]}")
    columns = [ATTRIBUTES.index(a) for a in attributes]
    paths = np.array([str(folder / IMAGES_DIR / f) for f in files])
    split_of = np.array([partition[f] for f in files])
    if len(paths) and not Path(paths[0]).is_file():
        raise FileNotFoundError(f"{paths[0]} is listed in {ATTRIBUTE_FILE} but missing")

    def stream(split: int) -> Stream:
        members = np.flatnonzero(split_of == split)

        def source(seed):
            order = members if seed is None else np.random.default_rng(seed).permutation(members)
            return tf.data.Dataset.from_tensor_slices((paths[order], values[order]))

        return Stream(source, load, len(members))

    def load(path, attrs):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return preprocess(image, attrs, columns)

    return {name: stream(index) for name, index in PARTITIONS.items()}


def tfds_streams(attributes: Sequence[str], download: bool, data_dir: str | None = None) -> dict[str, Stream]:
    """{"train", "validation", "test"} streams of tensorflow-datasets ``celeb_a``."""
    tfds, tf = sources.import_tfds(), sources.import_tf()
    builder = tfds.builder("celeb_a", data_dir=data_dir)
    if download:
        try:
            builder.download_and_prepare()
        except Exception as e:  # NonMatchingChecksumError: Google Drive's quota page (tensorflow/datasets#1482)
            raise sources.DataNotFoundError(
                f"tensorflow-datasets could not download celeb_a ({type(e).__name__}: {e}). Download the official "
                f"files by hand and pass their folder with --data_dir (see mvae_jax/data/celeba.py)"
            ) from e
    columns = [ATTRIBUTES.index(a) for a in attributes]

    def stream(split: str) -> Stream:
        def source(seed):
            # Images stay encoded until ``convert``, after the split into process shards.
            ds = builder.as_dataset(
                split=split,
                shuffle_files=seed is not None,
                read_config=tfds.ReadConfig(shuffle_seed=seed),
                decoders={"image": tfds.decode.SkipDecoding()},
            )
            if seed is not None:
                ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False)
            return ds

        try:
            count = builder.info.splits[split].num_examples
        except KeyError:  # no split metadata (tfds.testing.mock_data): count once
            count = int(source(None).reduce(0, lambda n, _: n + 1))
        return Stream(source, convert, count)

    def convert(example):
        attrs = tf.stack([example["attributes"][a] for a in ATTRIBUTES])
        image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
        return preprocess(image, attrs, columns)

    return {name: stream(name) for name in PARTITIONS}


def load(config):
    """Train and test streams of CelebA with ``config.attributes`` (see the module docstring for the sources)."""
    from mvae_jax.data import Dataset

    attributes = check_attributes(config.attributes)
    if config.data_dir is not None:
        folder = find_folder(config.data_dir)
        if folder is None:
            raise sources.DataNotFoundError(
                f"no CelebA under data_dir={str(config.data_dir)!r}: " + _what_is_missing(Path(config.data_dir))
            )
        streams = folder_streams(folder, attributes)
        digest = hashlib.sha256()
        for name in (ATTRIBUTE_FILE, PARTITION_FILE):
            digest.update((folder / name).read_bytes())
        source = f"folder:{digest.hexdigest()}"
    elif sources.tfds_prepared("celeb_a"):
        streams, source = tfds_streams(attributes, download=False), "tfds:celeb_a"
    elif sources._reachable(*sources.TFDS_HOST):
        streams, source = tfds_streams(attributes, download=True), "tfds:celeb_a"
    else:
        raise sources.DataNotFoundError(
            "could not load CelebA: tensorflow-datasets has no prepared celeb_a and cannot download it here. "
            f"Pass --data_dir=DIR where DIR holds {IMAGES_DIR}/, {ATTRIBUTE_FILE} and {PARTITION_FILE}"
        )
    # The images' fingerprint (it keys the cached attribute scorer): the files that list and split them, and
    # the images modelled; an image file changed in place is not seen (hashing 200,000 JPEGs would take minutes).
    fingerprint = hashlib.sha256(f"{source}:{len(streams['train'])}:{len(streams['test'])}".encode()).hexdigest()
    return Dataset(
        "celeba",
        modalities(config),
        streams["train"],
        streams["test"],
        validation=streams["validation"],
        fingerprints={"image": fingerprint},
    )


def query_vocabulary(config) -> tuple[tuple[str, ...], tuple[str, ...], dict]:
    """(the run's attributes, all 40, ``QUERY_ALIASES``): what a ``--query`` may name."""
    return check_attributes(config.attributes), tuple(ATTRIBUTES), QUERY_ALIASES


ATTRIBUTE_NAMES = opt.Option(
    "attributes",
    "strs",
    (),
    "the attributes modelled, comma separated",
    "CelebA attribute names, each once",
    empty="all 40",
)
CONV_WIDTHS = opt.widths(
    "conv_widths",
    (32, 64, 128, 256),
    "channels of the conv encoder's stride-2 layers (the decoder mirrors them); 64 / 2^len must be an integer",
    "32,64,128,256",
)


def check(config) -> None:
    """ValueError naming the bad setting: unknown attributes, or more conv widths than halvings of the image."""
    check_attributes(config.attributes)
    if IMAGE_SIZE % 2 ** len(config.conv_widths):
        raise ValueError(
            f"conv_widths={config.conv_widths!r} is invalid; allowed: at most {IMAGE_SIZE.bit_length() - 1} widths: "
            f"each halves the {IMAGE_SIZE}x{IMAGE_SIZE} image"
        )


SPEC = DatasetSpec(
    "celeba",
    modalities,
    load,
    splits="official",
    scorers={"image": Scorer(OWN_SPLIT, targets=QUERY_MODALITY)},
    query_modality=QUERY_MODALITY,
    query_vocabulary=query_vocabulary,
    options=(ATTRIBUTE_NAMES, CONV_WIDTHS),
    check=check,
)
"""No class labels (coherence, latent accuracy and tSNE need them); an attribute CNN of the faces trained on the
training split (``mvae_jax.attributes``) scores the queries and gives FID its features."""

"""PolyMNIST: M image modalities, each an MNIST digit of the example's class on a crop of its own background.

Sutter, Daunhawer & Vogt 2021 (MoPoE, Sec. 5 and App. C): modality m of an
example is a 28x28 RGB crop of background image m with the colours inverted
where the digit is. The modalities of one example share the class, not the
handwriting: each modality draws its own MNIST image of that class. The class
(the digit) comes with the files; it is no modality (``contract.FROM_FILES``).

Sources, in order, under ``--data_dir``:

1. the **official files** (the PolyMNIST zip that MoPoE and MultiVae download,
   in ``data_dir``, ``data_dir/PolyMNIST`` or ``data_dir/MMNIST``)::

       train/m0/<i>.<digit>.png ... train/m4/...   test/m0/... test/m4/...

   paired across modalities by file name (``i.digit``, as the authors' loaders
   do; directory order is not an order);
2. else **built** by the published procedure from MNIST IDX files
   (``data_dir/mnist/``) and background images
   (``data_dir/polymnist_backgrounds/``, ``*.jpg`` and ``*.png`` sorted by name,
   the first M used as m0..m(M-1)). We follow the authors' generator
   (MoPoE's ``mmnist/MMNISTDataset.py``, the same in srl-ethz/mmvaeplus): for
   each class and modality its own random permutation of that class's MNIST
   images, so example ``(digit, i)`` of modality m is the i-th image of that
   permutation; the digit binarized at ``> 128``; a uniformly random 28x28 crop
   of the modality's background (``randint(0, width - 28)``,
   ``randint(0, height - 28)``); the colours inverted (``255 - c``) where the
   digit is. The draws come from NumPy, seeded per modality
   (``default_rng([BUILD_SEED, m])``), not from torch's ``randperm`` with
   seed 42: the same procedure, other random draws. Seeding per modality makes
   m0..m4 of a 10-modality build the same images as a 5-modality build.

Either way the decoded images are cached once as uint8 arrays with a manifest
of their SHA-256 (``$MVAE_JAX_CACHE/data/polymnist/``; 140 MB per modality of
the training split), not as 350,000 PNGs: a second run reads 2 arrays per
modality and checks their checksums. A truncated or foreign file (a PNG of
another size, an IDX of labels where images are expected, a cache array that
fails its checksum) is an error that names it.

The cache holds the examples by class, then by their index ``i`` (the
official files' sorted names); a split is read in one fixed permutation of
that order (``ORDER_SEED``, the same for the official and the built files), so
that its first N examples, which eval.py's ``--tsne_points``, ``--fid_points``
and ``--ll_points`` take, are a sample of every class, as MNIST's file order
is. Splits: the official train (60,000) and test (10,000); ``--validation=N``
holds out N training examples (``hold_out``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
import re

import numpy as np

from mvae_jax import options as opt
from mvae_jax.data import sources
from mvae_jax.data.contract import FROM_FILES, OWN_SPLIT, VALIDATION, DatasetSpec, Scorer
from mvae_jax.files import atomic_write_bytes, atomic_write_text
from mvae_jax.modality import Modality

log = logging.getLogger(__name__)

SIZE = 28
MAX_MODALITIES = 10  # the backgrounds of the Extended PolyMNIST (Wesego & Rooshenas, TMLR 2024)
BUILD_SEED = 42  # the authors' generator's default seed (ours draws from NumPy with it)
BACKGROUNDS_DIR = "polymnist_backgrounds"
OFFICIAL_DIRS = ("", "PolyMNIST", "MMNIST", "polymnist")
BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "test")
ORDER_SEED = 0  # the permutation of each split's examples (by class, then index) into the order a Dataset holds
CACHE_VERSION = 1  # bump when the build or the cache layout changes: old caches are then not read
MANIFEST = "manifest.json"
_PNG_NAME = re.compile(r"^(\d+)\.(\d)\.png$")


def modality_names(num_modalities: int) -> tuple[str, ...]:
    """("m0", ..., "m{M-1}")."""
    return tuple(f"m{m}" for m in range(num_modalities))


def modalities(config) -> tuple[Modality, ...]:
    """m0..m(M-1): (28, 28, 3) RGB in [0, 1], ``config.image_likelihood``, the MoPoE PolyMNIST networks."""
    kind = config.image_likelihood
    return tuple(Modality(n, (SIZE, SIZE, 3), kind, "mopoe") for n in modality_names(config.num_modalities))


NUM_MODALITIES = opt.integer(
    "num_modalities",
    5,
    f"image modalities m0..m(N-1), 2 to {MAX_MODALITIES} (5: PolyMNIST; more: the Extended PolyMNIST)",
    allowed=f"an integer from 2 to {MAX_MODALITIES} (5: PolyMNIST; 6-{MAX_MODALITIES}: the Extended PolyMNIST, one "
    "background image each)",
    check=lambda m: opt.is_int(m) and 2 <= m <= MAX_MODALITIES,
)

IMAGE_LIKELIHOOD = opt.choice(
    "image_likelihood",
    "bernoulli",
    ("bernoulli", "laplace"),
    "likelihood of the images: bernoulli (pixel values in [0, 1] as probabilities), or laplace of scale 0.75 "
    "(MoPoE's and MMVAE+'s on PolyMNIST; configs/mopoe_polymnist.py)",
    legacy="bernoulli",
)


def cache_directory() -> Path:
    """$MVAE_JAX_CACHE/data/polymnist, by default ~/.cache/mvae_jax/data/polymnist."""
    return Path(os.environ.get("MVAE_JAX_CACHE", Path.home() / ".cache" / "mvae_jax")) / "data" / "polymnist"


# ---------------------------------------------------------------------------------------------- building


def background_files(folder: Path) -> list[Path]:
    """The background images of ``folder`` (``.jpg``, ``.jpeg``, ``.png``), sorted by file name."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in BACKGROUND_SUFFIXES), key=lambda p: p.name)


def read_background(path: Path) -> np.ndarray:
    """An RGB background as uint8 (height, width, 3); ValueError naming the file if unreadable or too small."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    if pixels.shape[0] <= SIZE or pixels.shape[1] <= SIZE:
        raise ValueError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels; a background needs more than 28x28")
    return pixels


def compose(digits: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PolyMNIST images of ``digits`` (n, 28, 28) uint8 on random 28x28 crops of ``background``: (n, 28, 28, 3).

    The crop's corner is ``(randint(0, width - 28), randint(0, height - 28))``
    per image (the generator's ``x_c``, ``y_c``: upper bound excluded); where
    the digit's pixel is above 128 the crop's colours are inverted.
    """
    height, width, _ = background.shape
    left = rng.integers(0, width - SIZE, len(digits))
    top = rng.integers(0, height - SIZE, len(digits))
    offsets = np.arange(SIZE)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    crops = background[rows, cols]  # (n, 28, 28, 3)
    digit = (digits > 128)[..., None]
    return np.where(digit, 255 - crops, crops).astype(np.uint8)


def build_modality(images: np.ndarray, labels: np.ndarray, background: np.ndarray, m: int) -> np.ndarray:
    """Modality m of the examples of one MNIST split, ordered by class then index: (n, 28, 28, 3) uint8.

    For each class c (in order), the c-images of MNIST in a permutation of
    their own (``default_rng([BUILD_SEED, m])``), each on its own crop.
    """
    rng = np.random.default_rng([BUILD_SEED, m])
    images = images.reshape(len(images), SIZE, SIZE)
    parts = []
    for c in range(sources.NUM_CLASSES):
        members = np.flatnonzero(labels == c)
        parts.append(compose(images[rng.permutation(members)], background, rng))
    return np.concatenate(parts) if parts else np.zeros((0, SIZE, SIZE, 3), np.uint8)


def ordered_labels(labels: np.ndarray) -> np.ndarray:
    """The class of each example in PolyMNIST's order (by class, then index): sorted MNIST labels."""
    return np.sort(np.asarray(labels)).astype(np.int32)


# ---------------------------------------------------------------------------------------------- official files


def find_official(data_dir: Path) -> Path | None:
    """The folder holding ``train/m0`` and ``test/m0`` of the official files, or None."""
    for sub in OFFICIAL_DIRS:
        root = data_dir / sub if sub else data_dir
        if (root / "train" / "m0").is_dir() and (root / "test" / "m0").is_dir():
            return root
    return None


def official_names(folder: Path) -> list[tuple[int, int]]:
    """The (digit, index) of every ``<index>.<digit>.png`` in ``folder``, sorted; ValueError naming a stray file."""
    keys = []
    for path in folder.iterdir():
        match = _PNG_NAME.match(path.name)
        if match is None:
            if path.name.startswith("."):
                continue
            raise ValueError(f"{path}: not a PolyMNIST file name (expected <index>.<digit>.png)")
        keys.append((int(match.group(2)), int(match.group(1))))
    return sorted(keys)


def read_official_modality(root: Path, split: str, m: int, keys: list[tuple[int, int]]) -> np.ndarray:
    """The PNGs of modality m of ``split`` in the order of ``keys``: (n, 28, 28, 3) uint8; ValueError naming a
    missing, unreadable or misshapen file."""
    from PIL import Image, UnidentifiedImageError

    folder = root / split / f"m{m}"
    out = np.empty((len(keys), SIZE, SIZE, 3), np.uint8)
    for k, (digit, index) in enumerate(keys):
        path = folder / f"{index}.{digit}.png"
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), np.uint8)
        except FileNotFoundError:
            raise ValueError(f"{path} is missing: every modality needs the files of m0 (pairing is by name)") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"{path}: not a readable PNG ({e})") from None
        if pixels.shape != (SIZE, SIZE, 3):
            raise ValueError(f"{path}: an image of {pixels.shape[1]}x{pixels.shape[0]}, expected 28x28 RGB")
        out[k] = pixels
    return out


# ---------------------------------------------------------------------------------------------- the cache


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_array(path: Path, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def read_cached(folder: Path) -> dict[str, np.ndarray]:
    """{"train": images, "train_labels": labels, "test": ..., "test_labels": ...} of a cache folder, each file
    checked against the manifest's SHA-256 and shape; ValueError naming the file that fails."""
    manifest = json.loads((folder / MANIFEST).read_text())
    out = {}
    for name, entry in manifest["arrays"].items():
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise ValueError(f"{path} is missing (listed in {folder / MANIFEST}); delete {folder} to rebuild it")
        if (actual := _sha256(path)) != entry["sha256"]:
            raise ValueError(
                f"{path} has SHA-256 {actual[:16]}..., not the {entry['sha256'][:16]}... its manifest records: "
                f"the cache is damaged; delete {folder} and it is rebuilt"
            )
        array = np.load(path, allow_pickle=False)
        if list(array.shape) != entry["shape"]:
            raise ValueError(f"{path}: shape {array.shape}, its manifest records {tuple(entry['shape'])}")
        out[name] = array
    return out


def write_cache(folder: Path, arrays: dict[str, np.ndarray], about: dict) -> None:
    """Write ``arrays`` as .npy files, then the manifest (last: a folder without one is never read)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, array in arrays.items():
        path = folder / f"{name}.npy"
        _save_array(path, array)
        entries[name] = {"sha256": _sha256(path), "shape": list(array.shape), "dtype": str(array.dtype)}
    manifest = {"version": CACHE_VERSION, **about, "arrays": entries}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _cached_or_made(key: dict, make) -> tuple[dict[str, np.ndarray], str]:
    """(arrays, fingerprint) of the cache folder for ``key`` (``make()`` written there first if absent)."""
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    folder = cache_directory() / f"{key['modality']}-{key['source']}-{digest[:16]}"
    if not (folder / MANIFEST).is_file():
        log.info("PolyMNIST %s (%s): decoding once into %s", key["modality"], key["source"], folder)
        write_cache(folder, make(), key)
    manifest = (folder / MANIFEST).read_text()
    return read_cached(folder), hashlib.sha256(manifest.encode()).hexdigest()


def _idx_inputs(data_dir: Path) -> tuple[dict, dict]:
    """(MNIST splits, {file: SHA-256} of the IDX files) under ``data_dir``."""
    mnist = sources.load_image_classification("mnist", data_dir)
    folder = sources.find_idx_folder(data_dir, "mnist")
    files = sorted(p for p in folder.iterdir() if p.name.startswith(("train-", "t10k-")))
    return mnist, {p.name: _sha256(p) for p in files}


def _built(data_dir: Path, num_modalities: int) -> tuple[dict, dict[str, str]]:
    """Modalities built from ``data_dir/mnist`` and ``data_dir/polymnist_backgrounds``."""
    folder = data_dir / BACKGROUNDS_DIR
    if not folder.is_dir():
        raise sources.DataNotFoundError(
            f"no PolyMNIST under data_dir={str(data_dir)!r}: neither the official files (train/m0/<i>.<digit>.png, "
            f"test/...; in {', '.join(repr(d or '.') for d in OFFICIAL_DIRS)}) nor {folder} (background images "
            "to build it from MNIST, with the MNIST IDX files in data_dir/mnist/). Download the official zip "
            "(https://zenodo.org/record/4899160/files/PolyMNIST.zip) and unpack it there, or add the backgrounds"
        )
    backgrounds = background_files(folder)
    if len(backgrounds) < num_modalities:
        raise ValueError(
            f"num_modalities={num_modalities} needs {num_modalities} background images in {folder}; it has "
            f"{len(backgrounds)} ({', '.join(p.name for p in backgrounds) or 'none'})"
        )
    mnist, idx_sums = _idx_inputs(data_dir)
    arrays, prints = {}, {}
    for m in range(num_modalities):
        path = backgrounds[m]
        key = {"source": "built", "modality": f"m{m}", "background": _sha256(path), "mnist": idx_sums,
               "seed": BUILD_SEED}  # fmt: skip

        def make(m=m, path=path):
            background = read_background(path)
            out = {}
            for split in SPLITS:
                images, labels = mnist[split]
                out[split] = build_modality(images, labels, background, m)
                out[f"{split}_labels"] = ordered_labels(labels)
            return out

        arrays[f"m{m}"], prints[f"m{m}"] = _cached_or_made(key, make)
    return arrays, prints


def _official(root: Path, num_modalities: int) -> tuple[dict, dict[str, str]]:
    """Modalities read from the official files under ``root``."""
    keys = {split: official_names(root / split / "m0") for split in SPLITS}
    arrays, prints = {}, {}
    for m in range(num_modalities):
        for split in SPLITS:
            if not (root / split / f"m{m}").is_dir():
                raise ValueError(f"{root / split / f'm{m}'} is missing: num_modalities={num_modalities} needs m0..m"
                                 f"{num_modalities - 1} in {root / split}")  # fmt: skip
        listing = {
            split: hashlib.sha256(
                "".join(f"{p.name}:{p.stat().st_size}" for p in sorted((root / split / f"m{m}").iterdir())).encode()
            ).hexdigest()
            for split in SPLITS
        }
        key = {"source": "official", "modality": f"m{m}", "folder": str(root.absolute()), "listing": listing}

        def make(m=m):
            out = {}
            for split in SPLITS:
                found = official_names(root / split / f"m{m}")
                if found != keys[split]:
                    extra = sorted(set(found) ^ set(keys[split]))[:3]
                    raise ValueError(
                        f"{root / split / f'm{m}'} and {root / split / 'm0'} hold different file names (e.g. "
                        f"{', '.join(f'{i}.{d}.png' for d, i in extra)}): the modalities pair by name"
                    )
                out[split] = read_official_modality(root, split, m, keys[split])
                out[f"{split}_labels"] = np.asarray([d for d, _ in keys[split]], np.int32)
            return out

        arrays[f"m{m}"], prints[f"m{m}"] = _cached_or_made(key, make)
    return arrays, prints


def load(config):
    """The PolyMNIST splits of ``config.data_dir`` (official files, else built), ``config.num_modalities`` of them."""
    from mvae_jax.data import Dataset, hold_out

    if config.data_dir is None:
        raise sources.DataNotFoundError(
            "dataset=polymnist reads --data_dir: the official PolyMNIST files there, or MNIST IDX files in "
            f"DIR/mnist/ and background images in DIR/{BACKGROUNDS_DIR}/ to build it from"
        )
    data_dir = Path(config.data_dir)
    root = find_official(data_dir)
    if root is not None:
        log.info("PolyMNIST: the official files in %s", root)
        arrays, fingerprints = _official(root, config.num_modalities)
        source = f"official files in {root}"
    else:
        arrays, fingerprints = _built(data_dir, config.num_modalities)
        source = f"built from {data_dir / 'mnist'} and {data_dir / BACKGROUNDS_DIR}"
    splits, labels = {}, {}
    for split in SPLITS:
        classes = arrays["m0"][f"{split}_labels"]
        for name, parts in arrays.items():
            if not np.array_equal(parts[f"{split}_labels"], classes):
                raise ValueError(f"PolyMNIST {split}: the classes of {name} and m0 disagree ({source})")
        order = np.random.default_rng(ORDER_SEED).permutation(len(classes))
        labels[split] = classes[order]
        splits[split] = {name: parts[split][order].astype(np.float32) / 255.0 for name, parts in arrays.items()}
    held = {**splits["train"], "": labels["train"]}
    train, validation = hold_out(held, getattr(config, "validation", 0))
    labels["train"], labels["validation"] = train.pop(""), validation.pop("")
    log.info("PolyMNIST (%d modalities, %s): %d training examples", config.num_modalities, source, len(labels["train"]))
    return Dataset(
        "polymnist",
        modalities(config),
        train,
        splits["test"],
        validation=validation,
        class_labels=labels,
        fingerprints=fingerprints,
    )


SPEC = DatasetSpec(
    "polymnist",
    modalities,
    load,
    labels=FROM_FILES,
    scorers={f"m{m}": Scorer(OWN_SPLIT) for m in range(MAX_MODALITIES)},
    class_names=tuple(str(c) for c in range(sources.NUM_CLASSES)),
    options=(VALIDATION, NUM_MODALITIES, IMAGE_LIKELIHOOD),
)

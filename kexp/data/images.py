"""Image classification data: the bundled digits, or tensorflow-datasets.

Default data is the 8x8 handwritten digits scikit-learn bundles (1,797 real
images, no download; kexp bundles the same file, `kexp.data.digits`).
Fashion-MNIST, MNIST and CIFAR-10 come through tensorflow-datasets from
`data_dir`; when they are not prepared there, loading fails at once with
a message on how to provide them, never trying the network (tfds's
`download=False` can still reach cloud storage, tensorflow/datasets#3962).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from kexp.errors import UsageError

TFDS_NAMES = ("fashion_mnist", "mnist", "cifar10")
NAMES = ("digits", *TFDS_NAMES)

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclasses.dataclass
class ImageSplits:
    """Images in [0, 1], shape `(n, height, width, channels)`, with integer labels.

    Attributes:
        name: Data set name.
        x_train: Training images, float32.
        y_train: Training labels, int32.
        x_test: Test images, float32.
        y_test: Test labels, int32.
        class_names: One name per class.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def default_tfds_dir() -> Path:
    """Returns tensorflow-datasets' default folder (`TFDS_DATA_DIR` or ~/tensorflow_datasets)."""
    return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))


def load(name: str, *, data_dir: str = "", test_fraction: float = 0.2, seed: int = 0) -> ImageSplits:
    """Loads an image classification data set into memory.

    Args:
        name: `digits`, `fashion_mnist`, `mnist` or `cifar10`.
        data_dir: tensorflow-datasets folder; empty for its default.
        test_fraction: Held-out share for `digits` (tfds sets have their own test split).
        seed: Seed of the stratified `digits` split.

    Returns:
        The train and test splits.

    Raises:
        UsageError: For an unknown name, or tfds data that is not prepared in `data_dir`.
    """
    if name == "digits":
        return _digits(test_fraction, seed)
    if name in TFDS_NAMES:
        return _tfds(name, data_dir)
    raise UsageError(f"data.name: received {name!r}; allowed: one of {', '.join(NAMES)}")


def _digits(test_fraction: float, seed: int) -> ImageSplits:
    from kexp.data.digits import load_digits, stratified_split

    pixels, targets = load_digits()
    # Pixel values are 0..16 in this data set.
    images = (pixels / 16.0).astype("float32")[..., np.newaxis]
    labels = targets.astype("int32")
    classes = len(np.unique(labels))
    n_test = math.ceil(test_fraction * len(labels)) if 0 < test_fraction < 1 else 0  # nan and inf: refused
    if min(n_test, len(labels) - n_test) < classes:
        raise UsageError(f"data.test_fraction: received {test_fraction!r}; allowed: a share that leaves at least "
                         f"{classes} of the {len(labels)} digits (one per class) on each side, "
                         f"{(classes - 1) / len(labels):.10g} < share <= {1 - classes / len(labels):.10g}")
    train, test = stratified_split(labels, test_fraction, seed)
    return ImageSplits("digits", images[train], labels[train], images[test], labels[test],
                       tuple(str(d) for d in range(10)))


def _tfds(name: str, data_dir: str) -> ImageSplits:
    import tensorflow_datasets as tfds

    root = Path(data_dir) if data_dir else default_tfds_dir()
    builder = tfds.builder(name, data_dir=str(root))
    if not (Path(builder.data_dir) / "dataset_info.json").exists():
        raise UsageError(
            f"data.name={name}: not prepared under {root} (looked for {builder.data_dir}); this machine cannot "
            f"download it. On a machine with internet run "
            f"python -c \"import tensorflow_datasets as tfds; tfds.load('{name}', data_dir='DIR')\", "
            f"copy DIR here and pass --set data.data_dir=DIR"
        )
    splits = {}
    for split in ("train", "test"):
        # Batched iteration rather than batch_size=-1: the latter aborts on
        # generator-backed datasets (tfds.testing.mock_data) in TF 2.21.
        ds = builder.as_dataset(split=split, as_supervised=True).batch(10_000)
        batches = list(tfds.as_numpy(ds))
        images = np.concatenate([b[0] for b in batches]).astype("float32") / 255.0
        labels = np.concatenate([b[1] for b in batches]).astype("int32")
        splits[split] = (images, labels)
    classes = FASHION_CLASSES if name == "fashion_mnist" else CIFAR10_CLASSES if name == "cifar10" else tuple(
        str(d) for d in range(10))
    return ImageSplits(name, *splits["train"], *splits["test"], classes)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resizes square images to `size x size` with bilinear interpolation.

    Args:
        images: `(n, h, w, c)` float array.
        size: New side length.

    Returns:
        `(n, size, size, c)` float32 array.
    """
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import tensorflow as tf

    return tf.image.resize(images, (size, size), method="bilinear").numpy().astype("float32")


def scatter(images: np.ndarray, canvas: int, rng: np.random.Generator, noise: float = 0.0) -> np.ndarray:
    """Places each image at a random position on a blank square canvas, optionally adding pixel noise.

    Makes a small, clean data set harder in a controlled way: a classifier
    must find the digit wherever it is (what convolutions and their
    pretraining are for) and, with noise, must not memorize the noise.

    Args:
        images: `(n, h, w, c)` images in [0, 1].
        canvas: Side of the canvas, at least the images' height and width.
        rng: Draws the positions (and the noise).
        noise: Standard deviation of Gaussian noise added to every canvas pixel, clipped to [0, 1].

    Returns:
        `(n, canvas, canvas, c)` float32 images.

    Raises:
        UsageError: When the canvas is smaller than the images.
    """
    n, h, w, c = images.shape
    if canvas < max(h, w):
        raise UsageError(f"data.canvas: received {canvas}; allowed: 0 (off) or at least the images' side {max(h, w)}")
    out = np.zeros((n, canvas, canvas, c), dtype="float32")
    top = rng.integers(0, canvas - h + 1, n)
    left = rng.integers(0, canvas - w + 1, n)
    rows = top[:, None] + np.arange(h)[None, :]
    cols = left[:, None] + np.arange(w)[None, :]
    out[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = images
    if noise:
        out = np.clip(out + rng.normal(scale=noise, size=out.shape), 0.0, 1.0).astype("float32")
    return out

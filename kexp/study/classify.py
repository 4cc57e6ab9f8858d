"""Train, evaluate and report an image classifier: shared by softmax, mlp and lenet.

One path for every classifier experiment: load the data named in the config,
resize if asked, fit through the harness with sparse categorical
cross-entropy on logits, measure train and test accuracy, and draw the
confusion matrix and the misclassified examples.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np

from kexp.study import plots
from kexp.config import ExperimentConfig
from kexp.data import images
from kexp.engine.harness import Harness

# A builder gets the image shape and the number of classes.
BuildFn = Callable[[tuple[int, int, int], int], keras.Model]


def load_data(config: ExperimentConfig) -> images.ImageSplits:
    """Loads `config.data` (an `ImageDataConfig`) and resizes if `image_size` is set."""
    data = images.load(config.data.name, data_dir=config.data.data_dir,
                       test_fraction=config.data.test_fraction, seed=config.train.seed)
    if config.data.image_size:
        data.x_train = images.resize(data.x_train, config.data.image_size)
        data.x_test = images.resize(data.x_test, config.data.image_size)
    return data


def train_classifier(
    config: ExperimentConfig,
    harness: Harness,
    build: BuildFn,
    data: images.ImageSplits | None = None,
    *,
    name: str | None = None,
    epochs: int | None = None,
    optimizer: Callable[[], keras.optimizers.Optimizer] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[keras.Model, dict[str, float]]:
    """Fits a classifier, evaluates it, logs its figures and returns its metrics.

    Args:
        config: The experiment config (`data` is an `ImageDataConfig`).
        harness: The run's harness.
        build: Returns the uncompiled model (logits out) for an image shape and class count.
        data: Already loaded data; loaded from the config when None.
        name: Sub-folder and figure prefix when the run trains other models too.
        epochs: Overrides `train.epochs`.
        optimizer: Returns the optimizer; defaults to the train config's.
        callbacks: More Keras callbacks for the fit.

    Returns:
        The model and `test_accuracy`, `train_accuracy`, `test_loss`.
    """
    data = data or load_data(config)
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model = harness.fit(
        lambda: build(data.image_shape, data.num_classes),
        (data.x_train, data.y_train),
        (data.x_test, data.y_test),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=metrics,
        name=name,
        epochs=epochs,
        optimizer=optimizer,
        callbacks=callbacks,
    )
    test = harness.evaluate(model, (data.x_test, data.y_test), prefix="test_")
    train = harness.evaluate(model, (data.x_train, data.y_train), prefix="train_")
    report(harness, model, data, prefix=f"{name}_" if name else "")
    return model, {
        "test_accuracy": test["test_accuracy"],
        "train_accuracy": train["train_accuracy"],
        "test_loss": test["test_loss"],
    }


def predict_classes(model: keras.Model, x: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Returns (predicted class, softmax probabilities) for images `x`."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    probs = np.asarray(keras.ops.softmax(logits, axis=-1))
    return probs.argmax(axis=-1), probs


def report(harness: Harness, model: keras.Model, data: images.ImageSplits, max_errors: int = 30,
           prefix: str = "") -> None:
    """Logs the test confusion matrix and a grid of misclassified test images.

    Images are shown as stored when in [0, 1], and mapped from [-1, 1] otherwise.
    """
    predicted, _ = predict_classes(model, data.x_test)
    n = data.num_classes
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (data.y_test, predicted), 1)
    harness.log_figure(f"{prefix}confusion_matrix", plots.confusion_figure(
        confusion, data.class_names, title=f"{data.name} test, accuracy {np.trace(confusion) / confusion.sum():.3f}"))
    wrong = np.flatnonzero(predicted != data.y_test)[:max_errors]
    titles = [f"{data.class_names[data.y_test[i]]}→{data.class_names[predicted[i]]}" for i in wrong]
    shown = data.x_test[wrong]
    if shown.size and shown.min() < 0:
        shown = (shown + 1) / 2
    harness.log_figure(f"{prefix}misclassified", plots.image_grid(
        shown, titles, title=f"misclassified (true→predicted), {len(wrong)} shown"))

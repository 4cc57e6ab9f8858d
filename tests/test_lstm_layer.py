"""`kexp.models.LSTM` (issue 26): Keras' LSTM with a faster CPU backward pass.

It must be Keras' layer in every way a user can see (outputs, gradients, config, weights, saving, masks,
Bidirectional, mixed precision) and leave Keras' loop running where it does not apply. Its training graph must
really lack the slow product (a matmul by the transposed recurrent kernel inside the loop), and without a mask
(standard gates) its backward loop must hold one product a step: the whole-sequence op of `lstm_sequence`.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kexp.models as km
from kexp.models.lstm_sequence import STACKED_MAX_BATCH

X = np.random.default_rng(0).normal(size=(8, 12, 5)).astype("float32")
Y = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")


def _model(layer_class, masking: bool = True, **options) -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 5))
    masked = keras.layers.Masking()(inputs) if masking else inputs  # Masking passes a mask even when none is 0
    return keras.Model(inputs, keras.layers.Dense(3)(layer_class(7, **options)(masked)))


def _gradient_tensors(model: keras.Model, x, y=Y) -> list[tf.Tensor]:
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    return tape.gradient(loss, model.trainable_variables)


def _gradients(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    return [g.numpy() for g in _gradient_tensors(model, x)]


@pytest.mark.parametrize("options", [{}, {"go_backwards": True}, {"return_sequences": False, "use_bias": False},
                                     {"unit_forget_bias": False, "activation": "relu"}])
def test_outputs_equal_keras_lstm_bit_for_bit_and_gradients_to_rounding_with_and_without_a_mask(options):
    options = {"return_sequences": False, **options} if "return_sequences" not in options else options
    padded = X.copy()
    padded[:4, 8:] = 0.0  # the Masking layer masks these steps
    for x, masking in ((X, False), (X, True), (padded, True)):
        keras_model = _model(keras.layers.LSTM, masking, **options)
        kexp_model = _model(km.LSTM, masking, **options)
        np.testing.assert_array_equal(kexp_model(x).numpy(), keras_model(x).numpy())
        for ours, theirs in zip(_gradients(kexp_model, x), _gradients(keras_model, x), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def _products_by_function(layer_class, masking: bool = True, batch: int | None = 8, **options) -> dict[str, list[bool]]:
    """Each function (loop bodies, branches) of a training step's graph traced at `batch` examples (None: unknown)
    that multiplies: its `MatMul`s' `transpose_b`, by function name."""
    model = _model(layer_class, masking, **options)

    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    graph = gradients.get_concrete_function(tf.TensorSpec((batch, 12, 5))).graph.as_graph_def()
    products = {function.signature.name: [node.attr["transpose_b"].b for node in function.node_def
                                          if node.op == "MatMul"] for function in graph.library.function}
    return {name: flags for name, flags in products.items() if flags}


def _loop_products(layer_class, masking: bool = True, batch: int | None = 8, **options) -> list[int]:
    """The number of products in each loop body, sorted."""
    return sorted(len(flags) for name, flags in _products_by_function(layer_class, masking, batch, **options).items()
                  if "while_body" in name)


def test_its_training_step_multiplies_by_no_transposed_kernel_inside_the_loop_where_keras_does():
    assert any(any(flags) for flags in _products_by_function(keras.layers.LSTM).values())
    for masking, batch in ((True, 8), (False, 8), (False, 64), (False, None)):
        assert not any(any(flags) for flags in _products_by_function(km.LSTM, masking, batch).values())
    assert any(any(flags) for flags in _products_by_function(keras.layers.LSTM, dtype="mixed_bfloat16").values())
    assert not any(any(flags) for flags in _products_by_function(km.LSTM, dtype="mixed_bfloat16").values())


def test_without_a_mask_the_sequence_ops_backward_loop_holds_one_product_at_small_batches():
    """Forward 2 products a step; backward 1 (the weight and input gradients one product each after the loop) at a
    batch known to be at most STACKED_MAX_BATCH. A larger or unknown batch or a mask runs the step loop (forward 2,
    its gradient 4); Keras' own loop has 4 backward too."""
    assert _loop_products(km.LSTM, masking=False, batch=8) == [1, 2]
    assert _loop_products(km.LSTM, masking=False, batch=STACKED_MAX_BATCH) == [1, 2]
    assert 1 not in _loop_products(km.LSTM, masking=False, batch=None)
    assert 1 not in _loop_products(km.LSTM, masking=False, batch=STACKED_MAX_BATCH + 1)
    assert 1 not in _loop_products(km.LSTM, masking=True)
    assert 1 not in _loop_products(keras.layers.LSTM, masking=False)


@pytest.mark.parametrize("options", [{"return_sequences": True}, {"go_backwards": True, "return_sequences": True},
                                     {"use_bias": False}])
def test_the_sequence_op_gives_keras_outputs_states_and_every_gradient_including_the_initial_states(options):
    """Outputs, both returned states and their gradients (the initial state and the inputs included), at an unknown
    number of steps, each output used by the loss with its own weight."""
    x = tf.constant(X)
    states = [tf.constant(np.random.default_rng(4).normal(size=(8, 7)).astype("float32")) for _ in range(2)]
    results = {}
    for layer_class in (keras.layers.LSTM, km.LSTM):
        keras.utils.set_random_seed(5)
        layer = layer_class(7, return_state=True, **options)
        call = tf.function(lambda x, h, c: layer(x, initial_state=[h, c], training=True),
                           input_signature=[tf.TensorSpec((8, None, 5))] + [tf.TensorSpec((8, 7))] * 2)
        with tf.GradientTape() as tape:
            tape.watch([x, *states])
            outputs, h, c = call(x, *states)
            loss = tf.reduce_sum(outputs ** 2) + 3.0 * tf.reduce_sum(h) - 2.0 * tf.reduce_sum(c ** 3)
        gradients = tape.gradient(loss, [x, *states, *layer.trainable_variables])
        results[layer_class] = [outputs, h, c, *gradients]
    assert len(results[km.LSTM]) == 3 + 3 + (2 if options.get("use_bias") is False else 3)
    for ours, theirs in zip(results[km.LSTM][:3], results[keras.layers.LSTM][:3], strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for ours, theirs in zip(results[km.LSTM][3:], results[keras.layers.LSTM][3:], strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=2e-5, atol=1e-6)


def test_config_and_weights_are_keras_lstms_and_a_saved_bidirectional_model_loads_back(tmp_path: Path):
    assert km.LSTM(7, name="a").get_config() == keras.layers.LSTM(7, name="a").get_config()
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 5))
    model = keras.Model(inputs, keras.layers.Bidirectional(km.LSTM(7, return_sequences=True))(inputs))
    assert [w.shape for w in model.layers[1].forward_layer.weights] == [(5, 28), (7, 28), (28,)]
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[1].backward_layer) is km.LSTM and loaded.layers[1].backward_layer.go_backwards
    np.testing.assert_array_equal(loaded(X).numpy(), model(X).numpy())


def test_keras_own_loop_runs_for_dropout_while_training_and_for_implementation_1():
    layer = km.LSTM(7, dropout=0.5)
    assert not layer._transposed_loop_applies(training=True) and layer._transposed_loop_applies(training=False)
    # Keras' cell takes implementation 1 for recurrent dropout.
    assert not km.LSTM(7, recurrent_dropout=0.25)._transposed_loop_applies(training=False)
    assert not km.LSTM(7, implementation=1)._transposed_loop_applies(training=True)
    assert not km.LSTM(7, use_cudnn=True)._transposed_loop_applies(training=False)
    model = keras.Sequential([keras.Input((12, 5)), layer, keras.layers.Dense(3)])
    model.compile("adam", "mse")
    assert np.isfinite(model.fit(X, Y, epochs=2, verbose=0).history["loss"]).all()


def _long_sequence_gradients(layer_class, policy: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 400-step LSTM(7) under `policy`: its outputs and the gradients of their sum (every step's bias share
    adds up to hundreds, where a bfloat16 running sum stalls)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(2)
        model = keras.Sequential([keras.Input((400, 5)), layer_class(7, return_sequences=True)])
        x = np.random.default_rng(3).normal(size=(4, 400, 5)).astype("float32")
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            total = tf.reduce_sum(tf.cast(outputs, "float32"))
        return outputs.numpy().astype("float32"), [g.numpy() for g in tape.gradient(total, model.trainable_variables)]
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_under_a_mixed_policy_its_loop_keeps_gates_and_sums_in_float32_and_stays_as_close_as_keras(policy):
    """Products in the half precision on kernels cast once, gates, carry and the steps' gradient sums in float32
    (summed in bfloat16, a bias gradient stalled at 512): over 400 steps, outputs and gradients at least as close
    to float32's as Keras' mixed ones, and the dtypes Keras gives."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        assert km.LSTM(7)._transposed_loop_applies(training=True)
        kexp_model = _model(km.LSTM)
        out = kexp_model(X)
        assert out.dtype == keras.backend.standardize_dtype(policy.removeprefix("mixed_"))
        assert kexp_model.layers[2].cell.kernel.dtype == "float32"
        assert all(g.dtype == np.float32 for g in _gradients(kexp_model, X))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    outputs, ours = _long_sequence_gradients(km.LSTM, policy)
    keras_outputs, theirs = _long_sequence_gradients(keras.layers.LSTM, policy)
    exact_outputs, exact = _long_sequence_gradients(keras.layers.LSTM, "float32")
    assert np.abs(exact[2]).max() > 600  # the bias gradient: past where a bfloat16 sum of step shares stalls
    assert np.abs(outputs - exact_outputs).max() <= np.abs(keras_outputs - exact_outputs).max()
    for our_grad, their_grad, exact_grad in zip(ours, theirs, exact, strict=True):
        ours_off, theirs_off = np.abs(our_grad - exact_grad).max(), np.abs(their_grad - exact_grad).max()
        assert ours_off <= 1.5 * theirs_off


def test_a_stateful_layer_trained_eagerly_and_integer_inputs_give_keras_results():
    """The loop's gradient must see the states the loop saw (a stateful layer assigns its state variables after
    it); integer inputs go to Keras' loop, whose matmul promotes them. Losses agree to rounding: the
    whole-sequence op sums the steps' weight gradients in another order (reading the next batch's state instead
    changed them in the third digit)."""
    batches = np.random.default_rng(2).normal(size=(3, 4, 6, 5)).astype("float32")
    losses = {}
    for layer_class in (keras.layers.LSTM, km.LSTM):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((6, 5), batch_size=4), layer_class(7, stateful=True),
                                  keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.1), "mse", run_eagerly=True)
        losses[layer_class] = [model.train_on_batch(batch, Y[:4]) for batch in batches]
        model.layers[0].reset_states()
    np.testing.assert_allclose(losses[km.LSTM], losses[keras.layers.LSTM], rtol=1e-6)
    assert not km.LSTM(7)._transposed_loop_applies(training=True, sequences_dtype="int32")
    integers = (np.abs(X) * 3).astype("int32")
    np.testing.assert_array_equal(_model(km.LSTM)(integers).numpy(), _model(keras.layers.LSTM)(integers).numpy())


def test_the_builders_lstm_is_kexps_and_keras_lstm_is_keras_own():
    assert type(km.rnn((None, 4), 2, cell="lstm").layers[1]) is km.LSTM
    assert type(km.rnn((None, 4), 2, cell="keras_lstm").layers[1]) is keras.layers.LSTM


def test_repeated_and_nested_gradients_work_eagerly_as_with_keras_lstm():
    """A persistent tape asked twice, and a gradient penalty (a gradient of a gradient), in eager mode."""
    x = tf.constant(X[:4])
    results = {}
    for layer_class in (keras.layers.LSTM, km.LSTM):
        model = _model(layer_class, masking=False)
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape(persistent=True) as inner:
                inner.watch(x)
                loss = tf.reduce_sum(model(x, training=True) ** 2)
            first = inner.gradient(loss, x)
            again = inner.gradient(loss, model.trainable_variables)
            penalty = tf.reduce_sum(first ** 2)
        results[layer_class] = [first, *again, *outer.gradient(penalty, model.trainable_variables)]
    for ours, theirs in zip(results[km.LSTM], results[keras.layers.LSTM], strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)


def test_xla_fit_and_savedmodel_export_work_at_a_known_batch_and_an_unknown_one(tmp_path: Path):
    """A tf.cond's gradient could not compile under XLA (`FakeParam`), and a gradient reading the forward's arrays
    could not be exported: the op keeps tensors, and only a known batch runs it."""
    for batch_size in (3, None):  # the sequence op, then the step loop with a partial last batch
        losses = {}
        for layer_class in (keras.layers.LSTM, km.LSTM):
            keras.utils.set_random_seed(1)
            inputs = keras.Input((12, 5), batch_size=batch_size)
            model = keras.Model(inputs, keras.layers.Dense(3)(layer_class(7)(inputs)))
            model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
            losses[layer_class] = model.fit(X[:6] if batch_size else X[:7], Y[:6] if batch_size else Y[:7],
                                            batch_size=3, epochs=2, verbose=0).history["loss"]
        np.testing.assert_allclose(losses[km.LSTM], losses[keras.layers.LSTM], rtol=1e-6)
        folder = tmp_path / f"exported_{batch_size}"
        model.export(str(folder), verbose=False)
        restored = tf.saved_model.load(str(folder))  # held: its functions need the object alive
        np.testing.assert_array_equal(restored.serve(X[:3]).numpy(), model(X[:3]).numpy())


def test_half_precision_layers_run_the_step_loop():
    """The op's running sums would stay in float16 eagerly (a bias gradient 0.04 off Keras' at 1,000 steps)."""
    assert 1 not in _loop_products(km.LSTM, masking=False, dtype="float16")
    assert 1 not in _loop_products(km.LSTM, masking=False, dtype="mixed_bfloat16")
    assert _loop_products(km.LSTM, masking=False, dtype="float64") == [1, 2]


def test_the_sequence_op_keeps_the_static_shape_an_unrolled_layer_after_it_needs():
    """Its arrays are sized at run time; a traced output must keep Keras' `(batch, steps, units)` (the attacker's
    GRU(unroll=True) after it raised "Cannot unroll a RNN if the time dimension is undefined")."""
    shapes = {}
    for layer_class in (keras.layers.LSTM, km.LSTM):
        layer = layer_class(5, return_sequences=True)
        shapes[layer_class] = tf.function(layer).get_concrete_function(tf.TensorSpec((8, 6, 3))).output_shapes
    assert shapes[km.LSTM] == shapes[keras.layers.LSTM] == tf.TensorShape([8, 6, 5])
    model = keras.Sequential([keras.Input((6, 3), batch_size=8), km.LSTM(5, return_sequences=True),
                              keras.layers.GRU(4, unroll=True), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    history = model.fit(X[:8, :6, :3], Y[:8, :1], batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()

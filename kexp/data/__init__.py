"""Input data: generated functions, windows of series, bundled and tfds data sets."""

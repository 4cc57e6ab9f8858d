"""Input data: generated functions, windows of series, bundled and tfds data sets; part of the author API.

Import the module you need (`from kexp.data import images`): this package itself loads none of them.
"""

__all__ = [
    "functions",  # generated functions (the heart curve, XOR, linear data, ...)
    "images",     # digits (bundled), tfds datasets, digits scattered on a canvas
    "image_sizes",  # the sizes the CNN and DCGAN builders take, known without TensorFlow (config checks)
    "sequences",  # the adding problem
    "text",       # the standard library's Python source as a corpus; bracket balance
    "windows",    # sliding windows of series
]

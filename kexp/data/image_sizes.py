"""Internal: image sizes the CNN and DCGAN builders take, known without TensorFlow.

Config checks use these before TensorFlow loads, so a size a builder would
refuse mid-run is refused at `--set` with one line.
"""

from __future__ import annotations

__all__ = ["LENET5_MIN_SIZE", "NATIVE_SIZES", "dcgan_upsamplings"]

# The image datasets' own side (`data.image_size=0` keeps it).
NATIVE_SIZES = {"digits": 8, "fashion_mnist": 28, "mnist": 28, "cifar10": 32}
# Two 5x5 valid convolutions and two 2x2 pools.
LENET5_MIN_SIZE = 16


def dcgan_upsamplings(image_size: int) -> int:
    """Returns how many stride-2 steps a DCGAN uses between a 4..7 seed and `image_size`.

    Raises:
        ValueError: When `image_size` is not a seed size 4..7 times a power of two
            (at least one upsampling): 8, 10, 12, 14, 16, 28, 32, 64 work; 7, 9 or 30 do not.
    """
    size, steps = int(image_size), 0
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        steps += 1
    if steps == 0 or not 4 <= size <= 7:
        raise ValueError(
            "image_size must be a seed size 4..7 times a power of two, at least 8 (e.g. 8, 16, 28, 32, 64), "
            f"so stride-2 upsampling reaches it; received: image_size={image_size}"
        )
    return steps

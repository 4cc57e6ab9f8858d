"""Functions that the function-approximation demos generate data from (tutorial 003)."""

from __future__ import annotations

from typing import Callable

import numpy as np


def sin(x: np.ndarray) -> np.ndarray:
    """sin(x): the tutorial's first periodic target."""
    return np.sin(x)


def sin_x_pow(x: np.ndarray) -> np.ndarray:
    """sin(x) * x^0.1: the tutorial's harder variant with a slowly growing amplitude.

    Defined for x >= 0 (x^0.1 of a negative number is not real).
    """
    return np.sin(x) * np.power(np.abs(x), 0.1)


def heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x^2 + (y - cbrt(x^2))^2; its level set f = 1 is a heart.

    `np.cbrt` is real for every x, so negative x needs no special case.
    """
    return x**2 + (y - np.cbrt(x**2)) ** 2


SERIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"sin": sin, "sin_x_pow": sin_x_pow}

"""Text every Python install has: the standard library's own sources, as characters (tutorial 003's char-RNN).

The corpus is the top-level `*.py` files of the running Python's standard
library, in sorted file-name order; every tenth file goes to validation, so
no file is in both splits. Characters are printable ASCII and newline (96
symbols); everything else (tabs, non-ASCII) maps to one unknown symbol.

Also here: whether a piece of Python source closes every bracket it opens,
in order, with strings and comments ignored (`brackets_balanced`).
"""

from __future__ import annotations

import dataclasses
import sysconfig
from pathlib import Path

import numpy as np

# Printable ASCII, then newline; index len(ALPHABET) is the unknown symbol.
ALPHABET = "".join(chr(c) for c in range(32, 127)) + "\n"
UNKNOWN = "\N{REPLACEMENT CHARACTER}"
VOCAB_SIZE = len(ALPHABET) + 1
VALIDATION_EVERY = 10  # files 9, 19, 29, ... go to validation
_OPEN = {")": "(", "]": "[", "}": "{"}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Encoded training and validation text and where it came from.

    Attributes:
        train: Symbol ids of the training files, concatenated.
        validation: Symbol ids of the validation files, concatenated.
        train_files: Training file names.
        validation_files: Validation file names.
    """

    train: np.ndarray
    validation: np.ndarray
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]


def stdlib_files() -> list[Path]:
    """Returns the standard library's top-level `*.py` files, sorted by name."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"), key=lambda p: p.name)


def stdlib_corpus(train_chars: int) -> Corpus:
    """Returns the stdlib corpus with about `train_chars` training characters (whole files).

    Files are taken in name order until the training split holds at least
    `train_chars` characters and validation one file (or the files run
    out); every tenth file taken goes to validation instead.

    Raises:
        ValueError: When the standard library's sources are not there (a
            stripped Python install), naming the folder.
    """
    files = stdlib_files()
    if not files:
        raise ValueError(f"no *.py files in {sysconfig.get_paths()['stdlib']}: this Python ships without its "
                         "standard library sources")
    train, validation, train_names, validation_names = [], [], [], []
    size = 0
    for index, path in enumerate(files):
        if size >= train_chars and validation:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        if index % VALIDATION_EVERY == VALIDATION_EVERY - 1:
            validation.append(text)
            validation_names.append(path.name)
        else:
            train.append(text)
            train_names.append(path.name)
            size += len(text)
    return Corpus(encode("".join(train)), encode("".join(validation)), tuple(train_names), tuple(validation_names))


def encode(text: str) -> np.ndarray:
    """Returns the symbol ids of `text` (int32); characters outside `ALPHABET` get the unknown id."""
    table = np.full(128, len(ALPHABET), dtype=np.int32)
    for index, char in enumerate(ALPHABET):
        table[ord(char)] = index
    # surrogatepass: a lone surrogate (from a bad decode) is one unknown symbol, not an error.
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ids = np.full(codes.shape, len(ALPHABET), dtype=np.int32)
    ascii_ = codes < 128
    ids[ascii_] = table[codes[ascii_]]
    return ids


def decode(ids: np.ndarray) -> str:
    """Returns the text of symbol ids (the unknown symbol as U+FFFD)."""
    symbols = np.array(list(ALPHABET + UNKNOWN))
    return "".join(symbols[np.asarray(ids)])


def brackets_balanced(text: str) -> bool:
    """Returns whether every `(`, `[` and `{` in `text` closes, in order, outside strings and comments.

    A closing bracket with nothing open, or closing another kind, fails; so
    does a bracket still open at the end. Comments run from `#` to the end
    of the line; strings are quoted with `'`, `"` or their triples, with
    backslash escapes; a one-quote string ends at a newline.
    """
    stack: list[str] = []
    for _, char in _code(text):
        if char in "([{":
            stack.append(char)
        elif char in _OPEN:
            if not stack or stack.pop() != _OPEN[char]:
                return False
    return not stack


def clean_line_starts(text: str) -> np.ndarray:
    """Returns the offsets of line starts in `text` where no bracket, string or comment is open.

    A sample that starts there owes nothing to what came before it.
    """
    starts, depth = [], 0
    for i, char in _code(text):
        if char in "([{":
            depth += 1
        elif char in _OPEN:
            depth = max(0, depth - 1)
        elif char == "\n" and depth == 0 and i + 1 < len(text):
            starts.append(i + 1)
    return np.array(starts, dtype=np.int64)


def _code(text: str):
    """Yields `(offset, char)` for the characters of Python source outside strings and comments."""
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end  # the newline itself is code
            continue
        if char in "'\"":
            quote = char * 3 if text.startswith(char * 3, i) else char
            i += len(quote)
            while i < n:
                if text[i] == "\\":
                    i += 2
                elif text.startswith(quote, i):
                    i += len(quote)
                    break
                elif len(quote) == 1 and text[i] == "\n":
                    break  # an unclosed one-line string ends with its line
                else:
                    i += 1
            continue
        yield i, char
        i += 1

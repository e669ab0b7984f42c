"""A CLIP tokenizer built on this machine from a word list.

Real Stable Diffusion folders ship a 49k-token BPE vocabulary that cannot be downloaded here. The
tests and the bundled model use the same `transformers.CLIPTokenizer` class with a small vocabulary
instead: every known word is one token (through a chain of BPE merges), every other word falls back
to single characters, so any prompt tokenizes and the pipeline code paths are the real ones.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from transformers import CLIPTokenizer

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")

#: Words every diffinv tokenizer knows; the bundled model's captions are made of these.
DEFAULT_WORDS: tuple[str, ...] = (
    "a", "an", "the", "on", "of", "in", "with", "and", "background", "photo", "image", "picture",
    "red", "green", "blue", "yellow", "white", "black", "orange", "purple", "gray", "pink", "brown", "cyan",
    "circle", "square", "triangle", "star", "ring", "cross", "small", "large", "big", "tiny",
    "left", "right", "top", "bottom", "center", "cat", "dog", "house", "tree", "sky", "scene", "shape",
)


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that glue the characters of `word` (with its end-of-word mark) into one token."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    merges = []
    current = pieces[0]
    for piece in pieces[1:]:
        merges.append((current, piece))
        current = current + piece
    return merges


def build_tokenizer(words: Iterable[str] = DEFAULT_WORDS, model_max_length: int = 77) -> CLIPTokenizer:
    """Return a `CLIPTokenizer` whose vocabulary holds single characters plus each word of `words` whole."""
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        if token not in vocab:
            vocab[token] = len(vocab)

    for token in SPECIAL_TOKENS:
        add(token)
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        add(char)
        add(char + "</w>")
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(w.lower() for w in words):
        if not word.isalnum():
            raise ValueError(f"tokenizer words must be alphanumeric, got {word!r}")
        for left, right in _word_merges(word):
            if (left, right) not in merges:
                merges.append((left, right))
            add(left + right)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
        bos_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        pad_token=SPECIAL_TOKENS[1],
        unk_token=SPECIAL_TOKENS[1],
    )

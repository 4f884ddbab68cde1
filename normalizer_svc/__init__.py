"""Normalizer service: Triton dispatch, the Normalizer contract and built-in normalisers."""

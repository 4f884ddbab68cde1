"""Built-in normalisers of the three reference models, keyed by Triton model name."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from normalizer_svc.builtin import brain_mr_lesions, chest_ct_nodules, mammo_masses
from normalizer_svc.builtin.findings import FindingDraft, InvalidModelOutput
from normalizer_svc.builtin.model_input import ModelInput, ModelInputLike

Normalise = Callable[[ModelInputLike, Mapping[str, np.ndarray], str, str], list[FindingDraft]]

BUILTIN_NORMALISERS: dict[str, Normalise] = {
    "chest_ct_nodules": chest_ct_nodules.normalise,
    "mammo_masses": mammo_masses.normalise,
    "brain_mr_lesions": brain_mr_lesions.normalise,
}

__all__ = [
    "BUILTIN_NORMALISERS",
    "FindingDraft",
    "InvalidModelOutput",
    "ModelInput",
    "ModelInputLike",
    "Normalise",
]

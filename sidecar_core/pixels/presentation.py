"""Presentation LUT Shape (2050,0020): whether grey display values come out inverted."""

# PS3.3 C.11 chains Modality LUT -> VOI LUT -> Presentation LUT; the last one turns VOI output
# into P-Values. The General Image Module (C.7.6.1, Table C.7-9) defines the shape as:
#   IDENTITY - output is in P-Values; shall be used with MONOCHROME2 (or colour);
#   INVERSE  - output after inversion is in P-Values; shall be used with MONOCHROME1.
# C.11.6.1.2: INVERSE means P-Value = maximum value - output value.
# So INVERSE on a MONOCHROME1 image *is* the inversion that MONOCHROME1 asks for (C.7.6.3.1.2:
# the minimum value displays white after the VOI transformation), not a second one applied on
# top: MONOCHROME1 + INVERSE displays exactly as MONOCHROME1 alone does.
# When the shape is present it decides the polarity (it is the transformation that produces
# P-Values; presentation states do the same, PS3.4 N.2): INVERSE inverts MONOCHROME2 too, and
# IDENTITY leaves a MONOCHROME1 image uninverted. Both of these pairs break the "shall be used"
# rule above; we follow the shape, as DCMTK and dcm4che do by default. Without a shape (or with
# an unknown one, e.g. LIN OD, which is for hardcopy) the Photometric Interpretation decides.

from __future__ import annotations

from pydicom.dataset import Dataset

IDENTITY = "IDENTITY"
INVERSE = "INVERSE"
PRESENTATION_LUT_SHAPES = (IDENTITY, INVERSE)


def presentation_lut_shape(ds: Dataset) -> str:
    """IDENTITY or INVERSE as the image states it; empty when absent or any other value."""
    value = str(ds.get("PresentationLUTShape") or "").strip().upper()
    return value if value in PRESENTATION_LUT_SHAPES else ""


def inverts_display(is_monochrome1: bool, shape: str) -> bool:
    """Whether the grey display is inverted after the VOI LUT (low values shown bright)."""
    if shape == INVERSE:
        return True
    if shape == IDENTITY:
        return False
    return is_monochrome1

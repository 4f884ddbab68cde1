"""Named errors of the pixel pipeline, each with a stable UPPER_SNAKE reason for status mapping."""

from __future__ import annotations

from typing import ClassVar


class PixelPipelineError(Exception):
    """Base of every error the pixel pipeline raises on purpose.

    All of them are permanent for the input that caused them: retrying the same DICOM gives the
    same error, so a worker reports it (``asset.preprocess_failed``) instead of retrying.
    """

    reason: ClassVar[str] = "PIXEL_PIPELINE_ERROR"


class PixelDecodeError(PixelPipelineError):
    """The pixel data of one instance could not be turned into an array."""

    reason: ClassVar[str] = "PIXEL_DECODE_FAILED"


class MissingPixelData(PixelDecodeError):
    """The dataset has no Pixel Data, Float Pixel Data or Double Float Pixel Data element."""

    reason: ClassVar[str] = "MISSING_PIXEL_DATA"


class UnsupportedTransferSyntax(PixelDecodeError):
    """No decoder is implemented or installed for the transfer syntax (or it is absent)."""

    reason: ClassVar[str] = "UNSUPPORTED_TRANSFER_SYNTAX"


class TruncatedPixelData(PixelDecodeError):
    """The pixel data holds fewer bytes or frames than the Image Pixel module describes."""

    reason: ClassVar[str] = "TRUNCATED_PIXEL_DATA"


class PixelBudgetExceeded(PixelDecodeError):
    """Rows × Columns × NumberOfFrames (× samples × bytes) is over the pixel budget
    (sidecar_core.pixels.budget): refused from the header, never decoded."""

    reason: ClassVar[str] = "PIXEL_BUDGET_EXCEEDED"


class CorruptPixelData(PixelDecodeError):
    """The codec rejected the compressed stream."""

    reason: ClassVar[str] = "CORRUPT_PIXEL_DATA"


class InvalidPixelDescription(PixelDecodeError):
    """Image Pixel module attributes are missing, malformed or contradict each other."""

    reason: ClassVar[str] = "INVALID_PIXEL_DESCRIPTION"


class UnsupportedPhotometricInterpretation(PixelDecodeError):
    """The photometric interpretation cannot be displayed faithfully (e.g. retired CMYK)."""

    reason: ClassVar[str] = "UNSUPPORTED_PHOTOMETRIC_INTERPRETATION"


class SeriesError(PixelPipelineError):
    """The instances of a series cannot be combined into one ordered stack."""

    reason: ClassVar[str] = "SERIES_ERROR"


class EmptySeries(SeriesError):
    """No instance with pixel data was given."""

    reason: ClassVar[str] = "EMPTY_SERIES"


class IncompatibleSlices(SeriesError):
    """Slices differ in size, colour model or SeriesInstanceUID and cannot be stacked."""

    reason: ClassVar[str] = "INCOMPATIBLE_SLICES"


class InconsistentGeometry(SeriesError):
    """The slice geometry does not describe one 3-D volume."""

    reason: ClassVar[str] = "INCONSISTENT_GEOMETRY"


class InconsistentOrientation(InconsistentGeometry):
    """Slices of one 3-D series have different ImageOrientationPatient."""

    reason: ClassVar[str] = "INCONSISTENT_ORIENTATION"


class PartialGeometry(InconsistentGeometry):
    """Some slices carry ImagePositionPatient/ImageOrientationPatient and some do not."""

    reason: ClassVar[str] = "PARTIAL_GEOMETRY"


class DuplicateSlicePositions(InconsistentGeometry):
    """Two or more slices sit at the same position along the slice normal."""

    reason: ClassVar[str] = "DUPLICATE_SLICE_POSITIONS"


class MonochromeRequired(SeriesError):
    """A model-ready volume needs monochrome pixels in physical units, the series is colour."""

    reason: ClassVar[str] = "MONOCHROME_REQUIRED"


class WindowError(PixelPipelineError):
    """A display window cannot be resolved or applied."""

    reason: ClassVar[str] = "WINDOW_ERROR"


class WindowUnavailable(WindowError):
    """The requested preset needs a window the image does not carry (e.g. ``dicom``)."""

    reason: ClassVar[str] = "WINDOW_UNAVAILABLE"


class UnknownPreset(WindowError):
    """The preset name is not one of the known window presets."""

    reason: ClassVar[str] = "UNKNOWN_PRESET"


class InvalidWindow(WindowError):
    """The window width is out of range for its VOI LUT function (PS3.3 C.11.2.1.2)."""

    reason: ClassVar[str] = "INVALID_WINDOW"


class InvalidVoiLut(WindowError):
    """A VOI LUT Sequence item's LUT Descriptor or LUT Data is unusable (PS3.3 C.11.2.1.1)."""

    reason: ClassVar[str] = "INVALID_VOI_LUT"


class ModelInputFormatError(PixelPipelineError):
    """Bytes given as a model-ready input are not a valid ``sidecar.model_input.v1`` archive."""

    reason: ClassVar[str] = "MODEL_INPUT_FORMAT_ERROR"

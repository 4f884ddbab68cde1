"""Decodes one DICOM instance into frames in physical units (or 8-bit RGB) with named errors."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    RLELossless,
)

from sidecar_core.pixels import budget as pixel_budget
from sidecar_core.pixels.attributes import dicom_windows
from sidecar_core.pixels.color import palette_to_rgb, rgb_to_uint8
from sidecar_core.pixels.errors import (
    CorruptPixelData,
    InvalidPixelDescription,
    MissingPixelData,
    PixelDecodeError,
    PixelPipelineError,
    TruncatedPixelData,
    UnsupportedPhotometricInterpretation,
    UnsupportedTransferSyntax,
)
from sidecar_core.pixels.geometry import pixel_aspect
from sidecar_core.pixels.modality import ModalityTransform, modality_transform, to_physical
from sidecar_core.pixels.presentation import inverts_display, presentation_lut_shape
from sidecar_core.pixels.voi_lut import VoiLut, dicom_voi_lut, voi_input_signed
from sidecar_core.pixels.windowing import Window

MONOCHROME1 = "MONOCHROME1"
MONOCHROME2 = "MONOCHROME2"
PALETTE_COLOR = "PALETTE COLOR"
RGB = "RGB"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
LOSSY_TRANSFER_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless})
_NATIVE_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_END_OF_IMAGE = b"\xff\xd9"  # JPEG and JPEG-LS EOI, JPEG 2000 EOC (padding 00/FF may follow)


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """Decoded frames of one instance (or of a stacked series) ready for display or models.

    ``frames`` is float32 ``[N, Y, X]`` in physical units (modality transform applied) for
    MONOCHROME1/2, and uint8 ``[N, Y, X, 3]`` RGB for RGB, YBR_* (converted) and PALETTE COLOR.
    ``photometric_interpretation`` is the value stored in the file. ``voi_lut`` is the file's
    first VOI LUT table, kept only when it carries no usable Window Center/Width (PS3.3 C.11.2
    lets a display use either; the window is the one shown everywhere else). ``pixel_aspect``
    is the physical height / width of a pixel, for display assets only.
    """

    frames: np.ndarray
    photometric_interpretation: str
    modality: str
    is_color: bool
    modality_transform: ModalityTransform
    dicom_windows: tuple[Window, ...]
    bits_stored: int
    pixel_representation: int
    transfer_syntax_uid: str
    lossy: bool
    voi_lut: VoiLut | None = None
    presentation_lut_shape: str = ""  # IDENTITY, INVERSE or "" (absent)
    pixel_aspect: float = 1.0

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def rows(self) -> int:
        return int(self.frames.shape[1])

    @property
    def columns(self) -> int:
        return int(self.frames.shape[2])

    @property
    def is_monochrome1(self) -> bool:
        """The Photometric Interpretation is MONOCHROME1 (see ``display_inverted``)."""
        return self.photometric_interpretation == MONOCHROME1

    @property
    def display_inverted(self) -> bool:
        """Grey display values are inverted after the VOI LUT (low values bright): Presentation
        LUT Shape INVERSE, or MONOCHROME1 without a shape (presentation.py has the rules)."""
        return not self.is_color and inverts_display(
            self.is_monochrome1, self.presentation_lut_shape
        )

    @property
    def rescale_applied(self) -> bool:
        return self.modality_transform.kind != "none"

    @property
    def has_dicom_window(self) -> bool:
        """The file carries a VOI (Window Center/Width or a VOI LUT table): ``dicom`` resolves."""
        return bool(self.dicom_windows) or self.voi_lut is not None


def decode_image(ds: Dataset) -> DecodedImage:
    """Decode every frame of ``ds`` (native or compressed) and apply the modality transform.

    Raises a subclass of :class:`PixelDecodeError` naming the failure, never a bare error: what
    pydicom or numpy raise on an input nobody foresaw becomes a PixelDecodeError naming it, so
    the object fails and its series goes on instead of the job retrying the same input.
    """
    try:
        return _decode_image(ds)
    except (PixelPipelineError, MemoryError):
        raise
    except Exception as exc:
        raise PixelDecodeError(f"cannot decode ({type(exc).__name__}: {exc})") from exc


def _decode_image(ds: Dataset) -> DecodedImage:
    keyword = _pixel_keyword(ds)
    transfer_syntax = transfer_syntax_of(ds, keyword)
    rows, columns, samples, bits_allocated, photometric, n_frames = _describe(ds, keyword)
    # before anything reads the pixel data: its header alone can claim terabytes
    pixel_budget.current().check(rows, columns, n_frames, samples, bits_allocated)
    bits_stored = _int(ds, "BitsStored", bits_allocated)
    decoder = _decoder(transfer_syntax)
    if transfer_syntax.is_encapsulated:
        _check_encapsulated(ds, transfer_syntax, n_frames)
    else:
        frame_bits = rows * columns * samples * bits_allocated
        if photometric == "YBR_FULL_422":
            frame_bits = frame_bits * 2 // 3
        _check_native_length(ds, keyword, math.ceil(frame_bits * n_frames / 8))
    native = _native_monochrome(ds, keyword, transfer_syntax, samples, bits_allocated,
                                bits_stored, photometric, rows * columns * n_frames)
    array, meta = (native, {}) if native is not None else _decode(ds, transfer_syntax, decoder)
    decoded_frames = int(meta.get("number_of_frames", n_frames) or n_frames)
    out_samples = int(meta.get("samples_per_pixel", samples) or samples)
    shape = (decoded_frames, rows, columns) + ((out_samples,) if out_samples > 1 else ())
    stored = array.reshape(shape)
    out_photometric = str(meta.get("photometric_interpretation", photometric))
    pixel_representation = _int(ds, "PixelRepresentation", 0)
    windows: tuple[Window, ...] = ()
    voi_lut: VoiLut | None = None
    if out_photometric in (MONOCHROME1, MONOCHROME2) and out_samples == 1:
        transform = modality_transform(ds, decoded_frames)
        little_endian = transfer_syntax != ExplicitVRBigEndian
        frames = to_physical(stored, ds, transform, little_endian=little_endian)
        windows = dicom_windows(ds)
        if not windows:
            signed = voi_input_signed(transform, pixel_representation, bits_stored)
            voi_lut = dicom_voi_lut(ds, signed_input=signed, little_endian=little_endian)
    else:
        transform = ModalityTransform("none", (1.0,) * decoded_frames, (0.0,) * decoded_frames)
        if out_photometric == PALETTE_COLOR and out_samples == 1:
            frames = palette_to_rgb(stored, ds)
        elif out_photometric == RGB and out_samples == 3:
            frames = rgb_to_uint8(stored, bits_stored)
        else:
            raise UnsupportedPhotometricInterpretation(
                f"cannot display {photometric!r} decoded as {out_photometric!r}"
            )
    return DecodedImage(
        frames=frames,
        photometric_interpretation=photometric,
        modality=str(ds.get("Modality", "") or ""),
        is_color=frames.ndim == 4,
        modality_transform=transform,
        dicom_windows=windows,
        bits_stored=bits_stored,
        pixel_representation=pixel_representation,
        transfer_syntax_uid=str(transfer_syntax),
        lossy=str(ds.get("LossyImageCompression", "")) == "01"
        or transfer_syntax in LOSSY_TRANSFER_SYNTAXES,
        voi_lut=voi_lut,
        presentation_lut_shape=presentation_lut_shape(ds),
        pixel_aspect=pixel_aspect(ds),
    )


def transfer_syntax_of(ds: Dataset, keyword: str = "PixelData") -> UID:
    """The dataset's transfer syntax; a missing one is inferred only for native pixel data."""
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid:
        return UID(str(uid))
    element = ds[keyword]
    value = element.value
    if element.is_undefined_length or (isinstance(value, bytes) and value[:4] == _ITEM_TAG):
        raise UnsupportedTransferSyntax("no TransferSyntaxUID and the pixel data is encapsulated")
    _implicit, little_endian = ds.original_encoding
    return ExplicitVRBigEndian if little_endian is False else ExplicitVRLittleEndian


def _pixel_keyword(ds: Dataset) -> str:
    present = [kw for kw in PIXEL_KEYWORDS if kw in ds]
    if not present or ds[present[0]].value in (None, b""):
        raise MissingPixelData("the dataset has no pixel data element")
    if len(present) > 1:
        raise InvalidPixelDescription(f"more than one pixel data element: {present}")
    return present[0]


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    try:
        value = ds.get(keyword)
        if value in (None, ""):
            if default is None:
                raise InvalidPixelDescription(f"missing required {keyword}")
            return default
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidPixelDescription(f"{keyword} is not an integer: {exc}") from exc


def _describe(ds: Dataset, keyword: str) -> tuple[int, int, int, int, str, int]:
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    default_bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword)
    bits_allocated = _int(ds, "BitsAllocated", default_bits)
    samples = _int(ds, "SamplesPerPixel", 1)
    n_frames = _int(ds, "NumberOfFrames", 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if min(rows, columns, samples, n_frames) < 1 or bits_allocated not in (1, 8, 16, 32, 64):
        raise InvalidPixelDescription(
            f"Rows={rows} Columns={columns} SamplesPerPixel={samples} "
            f"NumberOfFrames={n_frames} BitsAllocated={bits_allocated}"
        )
    if not photometric:
        raise InvalidPixelDescription("missing PhotometricInterpretation")
    return rows, columns, samples, bits_allocated, photometric, n_frames


def _check_native_length(ds: Dataset, keyword: str, expected: int) -> None:
    actual = len(ds[keyword].value)
    if actual < expected:
        raise TruncatedPixelData(f"{keyword} holds {actual} bytes, the image needs {expected}")


def _check_encapsulated(ds: Dataset, transfer_syntax: UID, n_frames: int) -> None:
    """Count the frames and, for the JPEG family, require each to end with its EOI/EOC marker.

    Codecs silently decode a JPEG-LS or JPEG stream cut short into a partly empty image;
    a missing end marker is the reliable sign of truncation.
    """
    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=n_frames))
    except (struct.error, StopIteration, EOFError) as exc:  # cut inside an item header
        raise TruncatedPixelData(f"encapsulated pixel data is incomplete: {exc}") from exc
    except ValueError as exc:  # not a sequence of items at all
        raise CorruptPixelData(f"encapsulated pixel data is malformed: {exc}") from exc
    if len(frames) < n_frames:
        raise TruncatedPixelData(f"{len(frames)} of {n_frames} frames are present")
    if transfer_syntax == RLELossless:
        return
    for index, frame in enumerate(frames[:n_frames]):
        if not frame.rstrip(b"\x00\xff").endswith(_END_OF_IMAGE):
            raise TruncatedPixelData(f"frame {index + 1} ends without an end-of-image marker")


def _decoder(transfer_syntax: UID) -> Decoder:
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntax(f"{transfer_syntax.name}: {exc}") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise UnsupportedTransferSyntax(f"{transfer_syntax.name}: no codec installed ({missing})")
    return decoder


def _native_monochrome(ds: Dataset, keyword: str, transfer_syntax: UID, samples: int,
                       bits_allocated: int, bits_stored: int, photometric: str,
                       count: int) -> np.ndarray | None:
    """Native little-endian 8/16-bit greyscale (most CT, MR, CR, DX) straight from the pixel
    bytes, as pydicom's native decoder returns it (unused high bits corrected), without its
    per-instance option handling; None for anything else, which goes through pydicom."""
    if (keyword != "PixelData" or transfer_syntax not in _NATIVE_LITTLE_ENDIAN or samples != 1
            or bits_allocated not in (8, 16) or not 1 <= bits_stored <= bits_allocated
            or photometric not in (MONOCHROME1, MONOCHROME2)):
        return None
    representation = ds.get("PixelRepresentation", 0)
    if representation not in (0, 1):
        return None
    value = ds[keyword].value
    if not isinstance(value, bytes | bytearray):
        return None
    dtype = np.dtype(f"<{'i' if representation == 1 else 'u'}{bits_allocated // 8}")
    array = np.frombuffer(value, dtype=dtype, count=count)  # the length was checked above
    if bits_stored < bits_allocated:
        shift = bits_allocated - bits_stored
        array = np.left_shift(array, shift)
        np.right_shift(array, shift, out=array)
    return array


def _decode(
    ds: Dataset, transfer_syntax: UID, decoder: Decoder
) -> tuple[np.ndarray, dict[str, str | int]]:
    try:
        return decoder.as_array(ds)
    except StopIteration as exc:
        raise TruncatedPixelData("fewer frames than NumberOfFrames") from exc
    except ValueError as exc:
        message = str(exc)
        if "less than expected" in message or "insufficient pixel data" in message:
            raise TruncatedPixelData(message) from exc
        raise InvalidPixelDescription(message) from exc
    except RuntimeError as exc:
        raise CorruptPixelData(f"{transfer_syntax.name}: {exc}") from exc
    except (AttributeError, KeyError, TypeError, NotImplementedError) as exc:
        raise InvalidPixelDescription(f"{type(exc).__name__}: {exc}") from exc

"""The model registry (deploy/models.yaml): which models exist, what they cover, how to run them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "deploy" / "models.yaml"
REGISTRY_FORMAT_VERSION = 1
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_TENSOR = r"^[A-Za-z_][A-Za-z0-9_]*$"
_BUILTIN = re.compile(r"^builtin:([a-z][a-z0-9_]*)$")
_GRPC = re.compile(r"^grpcs?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):([0-9]{1,5})$")

Datatype = Literal["FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
                   "UINT32", "UINT64", "BOOL", "BYTES"]
# Where an input tensor's values come from in the model-ready input (docs/model-input.md).
InputSource = Literal["volume", "image", "spacing_zyx", "spacing_yx"]


class RegistryError(ValueError):
    """The registry file is missing, unreadable or invalid; the message names file, model, field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """An inclusive range in mm; either bound may be omitted."""

    min: float | None = Field(default=None, gt=0)
    max: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self

    def contains(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{mm(self.min)}–{mm(self.max)} mm"
        if self.min is not None:
            return f"at least {mm(self.min)} mm"
        return f"at most {mm(self.max or 0)} mm"


class DescriptionRules(_Strict):
    """Case-insensitive regexes on SeriesDescription: one of `include` (if any) must match,
    none of `exclude` may; `prefer` ranks covered series when max_series limits them."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()

    @field_validator("include", "exclude", "prefer")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"pattern {p!r} is not a valid regex: {exc}") from None
        return patterns

    def first_exclude(self, description: str) -> str | None:
        return next((p for p in self.exclude if re.search(p, description, re.IGNORECASE)), None)

    def preferred(self, description: str) -> bool:
        return any(re.search(p, description, re.IGNORECASE) for p in self.prefer)

    def included(self, description: str) -> bool:
        return not self.include or any(re.search(p, description, re.IGNORECASE)
                                       for p in self.include)


class Coverage(_Strict):
    """What a series must look like for the model to run on it."""

    modalities: tuple[str, ...] = Field(min_length=1)
    # BodyPartExamined values (upper case); empty = any. A series without BodyPartExamined is
    # covered when its (or the study's) description names one of them as a word.
    body_parts: tuple[str, ...] = ()
    series_description: DescriptionRules = DescriptionRules()
    # ImageType values (e.g. LOCALIZER) that rule a series out.
    image_type_exclude: tuple[str, ...] = ()
    min_slices: int = Field(default=1, ge=1)
    max_slices: int | None = Field(default=None, ge=1)
    pixel_spacing_mm: Range | None = None
    slice_spacing_mm: Range | None = None
    # At most this many series per study (description `prefer` matches first, then most
    # slices); None = all.
    max_series: int | None = Field(default=None, ge=1)

    @field_validator("modalities", "body_parts", "image_type_exclude")
    @classmethod
    def _upper(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for v in values:
            if not re.fullmatch(r"[A-Z0-9_ ]{1,16}", v):
                raise ValueError(f"{v!r} must be an upper-case DICOM code string (A-Z, 0-9, _)")
        return values

    @model_validator(mode="after")
    def _slices_ordered(self) -> Coverage:
        if self.max_slices is not None and self.max_slices < self.min_slices:
            raise ValueError(f"max_slices {self.max_slices} is less than min_slices "
                             f"{self.min_slices}")
        return self


class InputSpec(_Strict):
    name: str = Field(pattern=_TENSOR)
    datatype: Datatype = "FP32"
    source: InputSource


class OutputSpec(_Strict):
    """An output tensor and what a valid one looks like (checked before normalising)."""

    name: str = Field(pattern=_TENSOR)
    datatype: Datatype
    rank: int = Field(ge=0, le=8)
    # Fixed sizes of trailing dimensions, e.g. [6] for BOXES [N, 6]; checked from the right.
    trailing_dims: tuple[int, ...] = ()
    non_empty: bool = False
    # Outputs whose first dimension must equal this one's, e.g. SCORES for BOXES.
    same_length_as: str | None = None


class ModelEntry(_Strict):
    """One registered model."""

    name: str = Field(pattern=_NAME)
    version: str = Field(default="", pattern=r"^[0-9]*$",
                         description="Triton model version to request; empty = latest ready")
    triton_model: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,128}$")
    description: str = ""
    inputs: tuple[InputSpec, ...] = Field(min_length=1)
    outputs: tuple[OutputSpec, ...] = Field(min_length=1)
    coverage: Coverage
    normaliser: str
    deadline_s: float = Field(gt=0, le=3600)
    # Images per Triton request for 2-D models (Triton's max_batch_size); 0 = no batching.
    max_batch: int = Field(default=0, ge=0, le=1024)
    enabled: bool = True
    # Run everywhere but keep findings hidden from radiologists (in addition to facility shadow).
    shadow: bool = False
    # Operating threshold: findings with a lower confidence are stored but hidden by default
    # (reviewers can ask for them); the value is recorded with each AI run.
    operating_threshold: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("normaliser")
    @classmethod
    def _normaliser(cls, value: str) -> str:
        if _BUILTIN.match(value):
            return value
        m = _GRPC.match(value)
        if m and 0 < int(m.group(2)) < 65536:
            return value
        raise ValueError(f"{value!r} must be 'builtin:<name>', 'grpc://host:port' or "
                         "'grpcs://host:port' (mutual TLS with the mesh CA)")

    @model_validator(mode="after")
    def _tensors(self) -> ModelEntry:
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [s.name for s in specs]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} name {', '.join(dupes)} more than once")
        outs = {o.name for o in self.outputs}
        for o in self.outputs:
            if o.same_length_as is not None and o.same_length_as not in outs:
                raise ValueError(f"output {o.name}: same_length_as names unknown output "
                                 f"{o.same_length_as!r}")
        if self.is_2d and self.coverage.slice_spacing_mm is not None:
            raise ValueError("a 2-D model (input source 'image') cannot have slice_spacing_mm")
        return self

    @property
    def is_2d(self) -> bool:
        """True when the model takes one image per request (input source 'image')."""
        return any(i.source == "image" for i in self.inputs)

    @property
    def builtin_name(self) -> str | None:
        m = _BUILTIN.match(self.normaliser)
        return m.group(1) if m else None

    @property
    def grpc_target(self) -> str | None:
        for scheme in ("grpc://", "grpcs://"):
            if self.normaliser.startswith(scheme):
                return self.normaliser.removeprefix(scheme)
        return None

    @property
    def grpc_tls(self) -> bool:
        """A `grpcs://` normaliser: reached over mutual TLS with the normalizer's certificate
        (the model team's server holds a certificate of the mesh CA)."""
        return self.normaliser.startswith("grpcs://")

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]


class Registry(_Strict):
    """The whole registry file."""

    version: Literal[1]
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """The file the registry was read from."""
        return self._source

    @model_validator(mode="after")
    def _unique(self) -> Registry:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model name {', '.join(dupes)} appears more than once")
        return self

    def get(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"model {name!r} is not in the registry {self.source}".rstrip())

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def may_cover(self, modality: str, body_part: str) -> bool:
        """Whether some enabled model may cover a series of this modality and BodyPartExamined,
        from one instance's header alone (an early guess: eligibility decides at completion,
        with the descriptions, slice counts and spacing). A series without a body part may be
        covered through its description, so it counts."""
        modality = modality.strip().upper()
        part = body_part.strip().upper().replace(" ", "_")
        return any(
            m.enabled and modality in m.coverage.modalities
            and (not m.coverage.body_parts or not part or part in m.coverage.body_parts)
            for m in self.models)

    def enabled_for(self, enabled_models: Iterable[str] | None) -> list[ModelEntry]:
        """Models a facility runs: globally enabled ones, filtered by its list (None = all)."""
        wanted = None if enabled_models is None else set(enabled_models)
        return [m for m in self.models if m.enabled and (wanted is None or m.name in wanted)]


def findings_visible(entry: ModelEntry, facility_shadow_mode: bool) -> bool:
    """Shadow runs (model or facility) store findings without showing them to radiologists."""
    return not (entry.shadow or facility_shadow_mode)


def load_registry(path: Path | str | None = None) -> Registry:
    """Reads and validates a registry file; raises RegistryError naming file, model and field."""
    file = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{file}: cannot read model registry: {exc.strerror or exc}") from exc
    return parse_registry(text, str(file))


def parse_registry(text: str, source: str = "<string>") -> Registry:
    """Validates registry YAML text; `source` names the file in error messages."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: must be a mapping with 'version' and 'models'")
    if raw.get("version") != REGISTRY_FORMAT_VERSION:
        raise RegistryError(f"{source}: field version: must be {REGISTRY_FORMAT_VERSION}, "
                            f"got {raw.get('version')!r}")
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(_describe(exc, raw, source)) from None
    registry._source = source
    return registry


def _describe(exc: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            where = f"model {_model_name(raw, loc[1])}: "
            loc = loc[2:]
        field = ".".join(str(p) for p in loc) or "(entry)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where}field {field}: {msg}")
    return "\n".join(lines)


def _model_name(raw: dict[str, Any], index: int) -> str:
    models = raw.get("models")
    if isinstance(models, Sequence) and index < len(models) and isinstance(models[index], dict):
        name = models[index].get("name")
        if name:
            return repr(name)
    return f"#{index + 1}"


def mm(value: float) -> str:
    """A length for messages: 3.0, 0.7, 0.625 (at least one decimal, at most three)."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text

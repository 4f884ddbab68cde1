"""The model registry loads deploy/models.yaml and rejects bad files with precise messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sidecar_core.registry import (
    DEFAULT_PATH,
    RegistryError,
    findings_visible,
    load_registry,
    parse_registry,
)

REFERENCE_MODELS = ["chest_ct_nodules", "mammo_masses", "brain_mr_lesions"]


def _raw() -> dict:
    return yaml.safe_load(DEFAULT_PATH.read_text())


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_registry_has_the_three_reference_models() -> None:
    registry = load_registry()
    assert registry.names() == REFERENCE_MODELS
    chest = registry.get("chest_ct_nodules")
    assert chest.triton_model == "chest_ct_nodules"
    assert [i.name for i in chest.inputs] == ["VOLUME", "SPACING"]
    assert chest.output_names == ["BOXES", "SCORES"]
    assert chest.builtin_name == "chest_ct_nodules" and chest.grpc_target is None
    assert chest.coverage.min_slices == 40
    assert not chest.is_2d
    assert registry.get("mammo_masses").is_2d
    assert registry.get("brain_mr_lesions").coverage.body_parts == ("HEAD", "BRAIN")


def test_per_facility_enablement() -> None:
    registry = load_registry()
    assert [m.name for m in registry.enabled_for(None)] == REFERENCE_MODELS
    assert [m.name for m in registry.enabled_for(["mammo_masses"])] == ["mammo_masses"]
    assert registry.enabled_for([]) == []


def test_shadow_mode_hides_findings() -> None:
    entry = load_registry().get("chest_ct_nodules")
    assert findings_visible(entry, facility_shadow_mode=False)
    assert not findings_visible(entry, facility_shadow_mode=True)
    assert not findings_visible(entry.model_copy(update={"shadow": True}), False)


def test_grpc_normaliser_target(tmp_path: Path) -> None:
    raw = _raw()
    raw["models"][0]["normaliser"] = "grpc://normalizer.team-a:50070"
    entry = load_registry(_write(tmp_path, raw)).get("chest_ct_nodules")
    assert entry.grpc_target == "normalizer.team-a:50070" and entry.builtin_name is None
    assert not entry.grpc_tls
    raw["models"][0]["normaliser"] = "grpcs://normalizer.team-a:50070"
    entry = load_registry(_write(tmp_path, raw)).get("chest_ct_nodules")
    assert entry.grpc_target == "normalizer.team-a:50070" and entry.grpc_tls


def test_unknown_model_lookup_names_the_file() -> None:
    with pytest.raises(KeyError, match="knee_mr.*models.yaml"):
        load_registry().get("knee_mr")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda m: m["coverage"].__setitem__("min_slices", 0),
         "model 'chest_ct_nodules': field coverage.min_slices: Input should be greater than "
         "or equal to 1"),
        (lambda m: m.__setitem__("normaliser", "http://x:1"),
         "model 'chest_ct_nodules': field normaliser: 'http://x:1' must be 'builtin:<name>', "
         "'grpc://host:port' or 'grpcs://host:port'"),
        (lambda m: m.__setitem__("normaliser", "grpc://host:99999"),
         "field normaliser: 'grpc://host:99999' must be"),
        (lambda m: m["coverage"].__setitem__("pixel_spacing_mm", {"min": 2.0, "max": 1.0}),
         "model 'chest_ct_nodules': field coverage.pixel_spacing_mm: min 2.0 is greater than "
         "max 1.0"),
        (lambda m: m["coverage"]["series_description"].__setitem__("exclude", ["(unclosed"]),
         "field coverage.series_description.exclude: pattern '(unclosed' is not a valid regex"),
        (lambda m: m.__setitem__("deadline_s", -1),
         "model 'chest_ct_nodules': field deadline_s: Input should be greater than 0"),
        (lambda m: m.__setitem__("max_batch", "many"),
         "model 'chest_ct_nodules': field max_batch: Input should be a valid integer"),
        (lambda m: m.__setitem__("deadline", 5),
         "model 'chest_ct_nodules': field deadline: Extra inputs are not permitted"),
        (lambda m: m.pop("triton_model"),
         "model 'chest_ct_nodules': field triton_model: Field required"),
        (lambda m: m["coverage"].__setitem__("modalities", ["ct"]),
         "field coverage.modalities: 'ct' must be an upper-case DICOM code string"),
        (lambda m: m["inputs"][0].__setitem__("source", "pixels"),
         "model 'chest_ct_nodules': field inputs.0.source: Input should be 'volume', 'image'"),
        (lambda m: m["outputs"][0].__setitem__("same_length_as", "LABELS"),
         "output BOXES: same_length_as names unknown output 'LABELS'"),
        (lambda m: m["outputs"].append(dict(m["outputs"][0])),
         "outputs name BOXES more than once"),
    ],
)
def test_invalid_field_names_file_model_and_field(tmp_path: Path, mutate, expected: str) -> None:
    raw = _raw()
    mutate(raw["models"][0])
    path = _write(tmp_path, raw)
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    assert str(err.value).startswith(str(path) + ": ")
    assert expected in str(err.value)


def test_2d_model_cannot_have_slice_spacing(tmp_path: Path) -> None:
    raw = _raw()
    raw["models"][1]["coverage"]["slice_spacing_mm"] = {"min": 1.0}
    with pytest.raises(RegistryError, match="model 'mammo_masses'.*a 2-D model"):
        load_registry(_write(tmp_path, raw))


def test_nameless_model_is_named_by_position(tmp_path: Path) -> None:
    raw = _raw()
    del raw["models"][2]["name"]
    with pytest.raises(RegistryError, match=r"model #3: field name: Field required"):
        load_registry(_write(tmp_path, raw))


def test_duplicate_model_names(tmp_path: Path) -> None:
    raw = _raw()
    raw["models"].append(dict(raw["models"][0]))
    with pytest.raises(RegistryError, match="model name chest_ct_nodules appears more than once"):
        load_registry(_write(tmp_path, raw))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 2\nmodels: []\n", "<string>: field version: must be 1, got 2"),
        ("models: []\n", "field version: must be 1, got None"),
        ("- a\n- b\n", "must be a mapping with 'version' and 'models'"),
        ("version: 1\nmodels: [\n", "not valid YAML"),
        ("version: 1\nmodels: []\n", "field models: Tuple should have at least 1 item"),
    ],
)
def test_file_level_errors(text: str, expected: str) -> None:
    with pytest.raises(RegistryError) as err:
        parse_registry(text)
    assert str(err.value).startswith("<string>: ")
    assert expected in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RegistryError, match=f"{missing}: cannot read model registry"):
        load_registry(missing)


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    raw = _raw()
    raw["models"][0]["deadline_s"] = 0
    raw["models"][1]["max_batch"] = -1
    with pytest.raises(RegistryError) as err:
        load_registry(_write(tmp_path, raw))
    lines = str(err.value).splitlines()
    assert any("'chest_ct_nodules': field deadline_s" in line for line in lines)
    assert any("'mammo_masses': field max_batch" in line for line in lines)

"""Eligibility against the shipped registry: covered studies plan runs, the rest say exactly why."""

from __future__ import annotations

import pytest

from sidecar_core.registry import Registry, load_registry
from workflow_svc.study.eligibility import PlannedRun, SeriesFacts, Stage, StudyFacts, decide


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry()


def ct_chest(uid: str = "1.2.3", slices: int = 120, spacing: float = 0.7, gap: float = 1.25,
             body_part: str = "CHEST", description: str = "AX LUNG 1.25",
             image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")) -> SeriesFacts:
    return SeriesFacts(uid, "CT", body_part, description, slices, (spacing, spacing), gap,
                       image_type)


def mg(uid: str, images: int = 1, description: str = "L CC") -> SeriesFacts:
    return SeriesFacts(uid, "MG", "BREAST", description, images, (0.07, 0.07), None,
                       ("ORIGINAL", "PRIMARY"))


def mr(uid: str, body_part: str = "HEAD", description: str = "AX T2 FLAIR", slices: int = 28,
       spacing: float = 0.9, gap: float = 5.0) -> SeriesFacts:
    return SeriesFacts(uid, "MR", body_part, description, slices, (spacing, spacing), gap,
                       ("ORIGINAL", "PRIMARY", "M", "NONE"))


STUDY = StudyFacts("1.2.840.1", "", ())


def test_chest_ct_is_eligible(registry: Registry) -> None:
    d = decide(STUDY, [ct_chest()], registry, None)
    assert d.eligible
    assert d.runs == [PlannedRun("chest_ct_nodules", "1.2.3")]
    assert d.reason == "covered by chest_ct_nodules (1 series)"
    assert d.model_names == ["chest_ct_nodules"]


def test_chest_ct_runs_once_on_the_preferred_series(registry: Registry) -> None:
    series = [ct_chest("1.1", slices=300, description="AX SOFT TISSUE 1.0"),
              ct_chest("1.2", slices=250, description="AX LUNG 1.25"),
              ct_chest("1.3", slices=2, description="SCOUT", image_type=("ORIGINAL", "LOCALIZER"))]
    d = decide(STUDY, series, registry, None)
    assert d.runs == [PlannedRun("chest_ct_nodules", "1.2")]
    assert any(r.series_uid == "1.3" and r.stage == Stage.DESCRIPTION for r in d.rejections)


def test_ct_abdomen_is_ineligible(registry: Registry) -> None:
    d = decide(STUDY, [ct_chest(body_part="ABDOMEN", description="AX ABD 2.5")], registry, None)
    assert not d.eligible and d.runs == []
    assert d.reason == "unsupported body part ABDOMEN for CT"


def test_ct_chest_with_10_slices_is_ineligible(registry: Registry) -> None:
    d = decide(STUDY, [ct_chest(slices=10)], registry, None)
    assert not d.eligible
    assert d.reason == "series 1.2.3 has 10 slices; chest_ct_nodules needs at least 40"


def test_missing_body_part_falls_back_to_the_description(registry: Registry) -> None:
    ok = decide(StudyFacts("1.2", "CT THORAX W/O CONTRAST"), [ct_chest(body_part="")],
                registry, None)
    assert ok.eligible
    no = decide(StudyFacts("1.2", "CT ABD PELVIS"), [ct_chest(body_part="", description="AX")],
                registry, None)
    assert not no.eligible
    assert "has no body part" in no.reason and "CHEST, THORAX" in no.reason


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        (ct_chest(spacing=3.0), "series 1.2.3: pixel spacing 3.0 mm outside 0.4–1.5 mm "
                                "for chest_ct_nodules"),
        (ct_chest(gap=10.0), "series 1.2.3: slice spacing 10.0 mm outside 0.3–5.0 mm"),
        (SeriesFacts("1.2.3", "CT", "CHEST", "AX", 120, None, 1.0),
         "series 1.2.3 has no pixel spacing; chest_ct_nodules needs 0.4–1.5 mm"),
        (ct_chest(gap=None), "series 1.2.3 has no slice spacing"),  # type: ignore[arg-type]
    ],
)
def test_wrong_spacing_is_ineligible(registry: Registry, series: SeriesFacts,
                                     expected: str) -> None:
    d = decide(STUDY, [series], registry, None)
    assert not d.eligible
    assert expected in d.reason


def test_mammography_four_series_one_view_each(registry: Registry) -> None:
    views = [mg(f"2.{i}", description=v) for i, v in enumerate(["R CC", "L CC", "R MLO", "L MLO"])]
    d = decide(STUDY, views, registry, None)
    assert d.eligible
    assert d.runs == [PlannedRun("mammo_masses", f"2.{i}") for i in range(4)]


def test_mammography_four_views_in_one_series(registry: Registry) -> None:
    d = decide(STUDY, [mg("2.9", images=4, description="Screening mammogram")], registry, None)
    assert d.runs == [PlannedRun("mammo_masses", "2.9")]


def test_tomosynthesis_stack_is_not_a_mammogram(registry: Registry) -> None:
    d = decide(STUDY, [mg("2.9", images=60)], registry, None)
    assert not d.eligible
    assert d.reason == "series 2.9 has 60 slices; mammo_masses takes at most 8"


@pytest.mark.parametrize("modality", ["CR", "US", "DX"])
def test_cr_and_us_are_ineligible(registry: Registry, modality: str) -> None:
    d = decide(STUDY, [SeriesFacts("3.1", modality, "CHEST", "PA", 1, (0.15, 0.15))],
               registry, None)
    assert not d.eligible
    assert d.reason == f"unsupported modality {modality}"


def test_several_unsupported_modalities_are_listed(registry: Registry) -> None:
    d = decide(STUDY, [SeriesFacts("3.1", "US", "ABDOMEN"), SeriesFacts("3.2", "SR")],
               registry, None)
    assert d.reason == "unsupported modality SR, US"


def test_brain_mr_is_eligible(registry: Registry) -> None:
    series = [mr("4.1", description="SAG T1 MPRAGE", slices=176, gap=1.0), mr("4.2"),
              mr("4.3", description="3-plane localizer", slices=3)]
    d = decide(STUDY, series, registry, None)
    assert d.eligible
    assert d.runs == [PlannedRun("brain_mr_lesions", "4.2")]  # FLAIR preferred


def test_brain_body_part_is_covered_too(registry: Registry) -> None:
    assert decide(STUDY, [mr("4.1", body_part="BRAIN")], registry, None).eligible


def test_knee_mr_is_ineligible(registry: Registry) -> None:
    d = decide(STUDY, [mr("5.1", body_part="KNEE", description="COR PD FS")], registry, None)
    assert not d.eligible
    assert d.reason == "unsupported body part KNEE for MR"


def test_deepest_failure_is_the_reason(registry: Registry) -> None:
    """A dose report's modality is less telling than the CT's slice count."""
    d = decide(STUDY, [SeriesFacts("9.9", "SR"), ct_chest(slices=12)], registry, None)
    assert d.reason == "series 1.2.3 has 12 slices; chest_ct_nodules needs at least 40"


def test_mixed_study_plans_every_covering_model(registry: Registry) -> None:
    d = decide(STUDY, [ct_chest(), mr("4.2")], registry, None)
    assert d.model_names == ["brain_mr_lesions", "chest_ct_nodules"]


def test_facility_enablement(registry: Registry) -> None:
    d = decide(STUDY, [ct_chest(), mr("4.2")], registry, ["brain_mr_lesions"])
    assert d.runs == [PlannedRun("brain_mr_lesions", "4.2")]
    d = decide(STUDY, [ct_chest()], registry, ["mammo_masses"])
    assert not d.eligible
    assert d.reason == ("chest_ct_nodules would cover this study but is not enabled for this "
                        "facility")
    d = decide(STUDY, [SeriesFacts("3.1", "CR")], registry, [])
    assert d.reason == "no AI model is enabled for this facility"


def test_model_disabled_in_registry(registry: Registry) -> None:
    models = tuple(m.model_copy(update={"enabled": m.name != "chest_ct_nodules"})
                   for m in registry.models)
    d = decide(STUDY, [ct_chest()], registry.model_copy(update={"models": models}), None)
    assert d.reason == "chest_ct_nodules would cover this study but is not enabled in the model " \
                       "registry"


def test_empty_study(registry: Registry) -> None:
    assert decide(STUDY, [], registry, None).reason == "study has no series"


def test_series_facts_from_indexed_attributes(registry: Registry) -> None:
    attrs = {"Modality": "MG", "BodyPartExamined": "BREAST", "SeriesDescription": "R CC",
             "ImagerPixelSpacing": [0.085, 0.085], "ImageType": "ORIGINAL\\PRIMARY"}
    facts = SeriesFacts.from_attributes("2.1", attrs, slice_count=1)
    assert facts == SeriesFacts("2.1", "MG", "BREAST", "R CC", 1, (0.085, 0.085), None,
                                ("ORIGINAL", "PRIMARY"))
    assert decide(STUDY, [facts], registry, None).eligible
    ct = SeriesFacts.from_attributes("1.1", {"Modality": "CT", "PixelSpacing": "0.7\\0.7",
                                             "SpacingBetweenSlices": "1.25"}, 100)
    assert ct.pixel_spacing_mm == (0.7, 0.7) and ct.slice_spacing_mm == 1.25
    study = StudyFacts.from_attributes({"StudyInstanceUID": "1.2", "ModalitiesInStudy": "CT\\SR"})
    assert study.modalities == ("CT", "SR")

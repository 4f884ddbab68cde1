"""C-FIND (study root) and C-MOVE SCU towards a facility's PACS: the patient's earlier studies
and their retrieval to the sidecar's own AE title, over plain TCP or DICOM TLS."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from sidecar_core.dicom.peer import DicomPeer
from sidecar_core.dicom.store_scu import AssociationRefused, _nodelay, tls_handshake_problem
from sidecar_core.dicom.uids import is_valid_uid

# DIMSE statuses of a query/retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5)
PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
MOVE_WARNING = 0xB000  # sub-operations complete, one or more failures or warnings


class QueryFailed(Exception):
    """The PACS answered the C-FIND or C-MOVE with a failure status, or not at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FoundStudy:
    """One C-FIND match at study level (only the attributes the sidecar records)."""

    study_instance_uid: str
    study_date: str
    description: str
    modalities: tuple[str, ...]
    accession: str
    instance_count: int


@dataclass(frozen=True)
class MoveResult:
    status: int
    completed: int
    failed: int
    warning: int


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    return str(value).strip()[:limit]


def _found(ds: Dataset) -> FoundStudy | None:
    uid = _text(ds, "StudyInstanceUID", 64)
    if not is_valid_uid(uid):
        return None
    raw = ds.get("ModalitiesInStudy", "") or ""
    values = list(raw) if isinstance(raw, MultiValue) else [raw]
    modalities = tuple(str(m).strip()[:16] for m in values if str(m).strip())
    try:
        count = int(ds.get("NumberOfStudyRelatedInstances", 0) or 0)
    except (TypeError, ValueError):
        count = 0
    return FoundStudy(uid, _text(ds, "StudyDate", 8), _text(ds, "StudyDescription", 256),
                      modalities[:8], _text(ds, "AccessionNumber", 64), max(count, 0))


@contextmanager
def _association(peer: DicomPeer, calling_ae: str, context: str, timeout_s: float,
                 tls: ssl.SSLContext | None) -> Iterator[Association]:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(context)
    host = peer.connect_host
    assoc = ae.associate(host, peer.port, ae_title=peer.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
                         tls_args=(tls, peer.host) if tls else None)
    if not assoc.is_established:
        problem = (tls_handshake_problem(host, peer.port, tls, timeout_s, peer.host)
                   if tls and not assoc.is_rejected else None)
        if problem is not None:
            raise AssociationRefused(f"DICOM TLS handshake with {peer} failed: {problem[0]}",
                                     tls_error=problem[0], tls_verify_failed=problem[1])
        raise AssociationRefused(f"no association with {peer} (rejected, aborted or "
                                 "unreachable)")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def find_studies(peer: DicomPeer, calling_ae: str, patient_id: str, *, modality: str = "",
                 since: str = "", exclude_uid: str = "", limit: int = 50,
                 timeout_s: float = 30.0, tls: ssl.SSLContext | None = None
                 ) -> list[FoundStudy]:
    """The patient's studies the PACS holds (study root C-FIND by PatientID, ModalitiesInStudy
    when `modality` is given, StudyDate from `since` (YYYYMMDD) on), newest first, without
    `exclude_uid`, at most `limit` (the rest of the matches is cancelled)."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.StudyInstanceUID = ""
    query.StudyDate = f"{since}-" if since else ""
    query.StudyDescription = ""
    query.ModalitiesInStudy = modality
    query.AccessionNumber = ""
    query.NumberOfStudyRelatedInstances = ""
    found: dict[str, FoundStudy] = {}
    with _association(peer, calling_ae, StudyRootQueryRetrieveInformationModelFind,
                      timeout_s, tls) as assoc:
        responses = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        for status, identifier in responses:
            if "Status" not in (status or Dataset()):
                raise QueryFailed(f"no C-FIND response from {peer} (timeout or abort)")
            code = int(status.Status)
            if code in PENDING:
                match = _found(identifier) if identifier is not None else None
                if match is not None and match.study_instance_uid != exclude_uid:
                    found.setdefault(match.study_instance_uid, match)
                if len(found) >= limit * 4:  # a PACS answering without end: stop reading
                    break
                continue
            if code != SUCCESS:
                raise QueryFailed(f"C-FIND refused by {peer}: status 0x{code:04X}", code)
    return sorted(found.values(), key=lambda f: f.study_date, reverse=True)[:limit]


def move_study(peer: DicomPeer, calling_ae: str, destination_ae: str, study_instance_uid: str,
               *, timeout_s: float = 300.0, tls: ssl.SSLContext | None = None) -> MoveResult:
    """Asks the PACS to C-STORE one study to `destination_ae` (study root C-MOVE) and waits for
    the final response; raises QueryFailed on a failure status or no response."""
    if not is_valid_uid(study_instance_uid):
        raise ValueError(f"not a DICOM UID: {study_instance_uid[:80]!r}")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_instance_uid
    with _association(peer, calling_ae, StudyRootQueryRetrieveInformationModelMove,
                      timeout_s, tls) as assoc:
        last: Dataset | None = None
        for status, _ in assoc.send_c_move(query, destination_ae,
                                           StudyRootQueryRetrieveInformationModelMove):
            if "Status" not in (status or Dataset()):
                raise QueryFailed(f"no C-MOVE response from {peer} (timeout or abort)")
            last = status
            if int(status.Status) not in PENDING:
                break
    assert last is not None
    code = int(last.Status)
    result = MoveResult(code, int(last.get("NumberOfCompletedSuboperations", 0) or 0),
                        int(last.get("NumberOfFailedSuboperations", 0) or 0),
                        int(last.get("NumberOfWarningSuboperations", 0) or 0))
    if code not in (SUCCESS, MOVE_WARNING):
        raise QueryFailed(f"C-MOVE of {study_instance_uid} refused by {peer}: status "
                          f"0x{code:04X} ({result.completed} stored, {result.failed} failed)",
                          code)
    return result

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RenderViewportRequest(_message.Message):
    __slots__ = ("study_id", "series_id", "slice_index", "preset")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    series_id: str
    slice_index: int
    preset: str
    def __init__(self, study_id: _Optional[str] = ..., series_id: _Optional[str] = ..., slice_index: _Optional[int] = ..., preset: _Optional[str] = ...) -> None: ...

class RenderViewportResponse(_message.Message):
    __slots__ = ("asset_id", "object_key", "content_type", "sha256", "rendered")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    RENDERED_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    object_key: str
    content_type: str
    sha256: str
    rendered: bool
    def __init__(self, asset_id: _Optional[str] = ..., object_key: _Optional[str] = ..., content_type: _Optional[str] = ..., sha256: _Optional[str] = ..., rendered: _Optional[bool] = ...) -> None: ...

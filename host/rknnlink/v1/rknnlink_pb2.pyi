from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DT_FLOAT32: _ClassVar[DataType]
    DT_FLOAT16: _ClassVar[DataType]
    DT_INT8: _ClassVar[DataType]
    DT_UINT8: _ClassVar[DataType]
    DT_INT16: _ClassVar[DataType]
    DT_UINT16: _ClassVar[DataType]
    DT_INT32: _ClassVar[DataType]
    DT_UINT32: _ClassVar[DataType]
    DT_INT64: _ClassVar[DataType]
    DT_BOOL: _ClassVar[DataType]
    DT_INT4: _ClassVar[DataType]
    DT_BFLOAT16: _ClassVar[DataType]

class TensorFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORMAT_DEFAULT: _ClassVar[TensorFormat]
    FORMAT_NCHW: _ClassVar[TensorFormat]
    FORMAT_NHWC: _ClassVar[TensorFormat]

class DumpPart(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DUMP_FLOAT32: _ClassVar[DumpPart]
    DUMP_RAW: _ClassVar[DumpPart]
DT_FLOAT32: DataType
DT_FLOAT16: DataType
DT_INT8: DataType
DT_UINT8: DataType
DT_INT16: DataType
DT_UINT16: DataType
DT_INT32: DataType
DT_UINT32: DataType
DT_INT64: DataType
DT_BOOL: DataType
DT_INT4: DataType
DT_BFLOAT16: DataType
FORMAT_DEFAULT: TensorFormat
FORMAT_NCHW: TensorFormat
FORMAT_NHWC: TensorFormat
DUMP_FLOAT32: DumpPart
DUMP_RAW: DumpPart

class HelloRequest(_message.Message):
    __slots__ = ("protocol_version", "client_version", "min_daemon_protocol", "client_name")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MIN_DAEMON_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    client_version: str
    min_daemon_protocol: int
    client_name: str
    def __init__(self, protocol_version: _Optional[int] = ..., client_version: _Optional[str] = ..., min_daemon_protocol: _Optional[int] = ..., client_name: _Optional[str] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("protocol_version", "daemon_version", "min_client_protocol", "client_id", "device", "max_message_bytes", "upload_chunk_bytes", "data_port")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DAEMON_VERSION_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENT_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_PORT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    daemon_version: str
    min_client_protocol: int
    client_id: str
    device: DeviceInfo
    max_message_bytes: int
    upload_chunk_bytes: int
    data_port: int
    def __init__(self, protocol_version: _Optional[int] = ..., daemon_version: _Optional[str] = ..., min_client_protocol: _Optional[int] = ..., client_id: _Optional[str] = ..., device: _Optional[_Union[DeviceInfo, _Mapping]] = ..., max_message_bytes: _Optional[int] = ..., upload_chunk_bytes: _Optional[int] = ..., data_port: _Optional[int] = ...) -> None: ...

class DeviceInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeviceInfo(_message.Message):
    __slots__ = ("serial", "platform", "npu_cores", "backend", "daemon_version", "protocol_version", "runtime_version", "driver_version", "library_path", "hostname", "os", "arch")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    NPU_CORES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DAEMON_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_PATH_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    serial: str
    platform: str
    npu_cores: int
    backend: str
    daemon_version: str
    protocol_version: int
    runtime_version: str
    driver_version: str
    library_path: str
    hostname: str
    os: str
    arch: str
    def __init__(self, serial: _Optional[str] = ..., platform: _Optional[str] = ..., npu_cores: _Optional[int] = ..., backend: _Optional[str] = ..., daemon_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., runtime_version: _Optional[str] = ..., driver_version: _Optional[str] = ..., library_path: _Optional[str] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., arch: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class HasModelRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class HasModelResponse(_message.Message):
    __slots__ = ("present", "size")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    present: bool
    size: int
    def __init__(self, present: _Optional[bool] = ..., size: _Optional[int] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("sha256", "total_size", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    total_size: int
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., total_size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadModelResponse(_message.Message):
    __slots__ = ("sha256", "size", "already_present")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    already_present: bool
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., already_present: _Optional[bool] = ...) -> None: ...

class TensorAttr(_message.Message):
    __slots__ = ("index", "name", "dims", "fmt", "dtype", "qnt_type", "zp", "scale", "n_elems", "size", "fl", "w_stride", "size_with_stride", "h_stride")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    FMT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    QNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ZP_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    N_ELEMS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FL_FIELD_NUMBER: _ClassVar[int]
    W_STRIDE_FIELD_NUMBER: _ClassVar[int]
    SIZE_WITH_STRIDE_FIELD_NUMBER: _ClassVar[int]
    H_STRIDE_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    dims: _containers.RepeatedScalarFieldContainer[int]
    fmt: str
    dtype: DataType
    qnt_type: int
    zp: int
    scale: float
    n_elems: int
    size: int
    fl: int
    w_stride: int
    size_with_stride: int
    h_stride: int
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., dims: _Optional[_Iterable[int]] = ..., fmt: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., qnt_type: _Optional[int] = ..., zp: _Optional[int] = ..., scale: _Optional[float] = ..., n_elems: _Optional[int] = ..., size: _Optional[int] = ..., fl: _Optional[int] = ..., w_stride: _Optional[int] = ..., size_with_stride: _Optional[int] = ..., h_stride: _Optional[int] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("client_id", "model_sha256", "core_mask", "collect_perf", "eval_mem", "async_mode", "dump_layers", "model_proof")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    CORE_MASK_FIELD_NUMBER: _ClassVar[int]
    COLLECT_PERF_FIELD_NUMBER: _ClassVar[int]
    EVAL_MEM_FIELD_NUMBER: _ClassVar[int]
    ASYNC_MODE_FIELD_NUMBER: _ClassVar[int]
    DUMP_LAYERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_PROOF_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    model_sha256: str
    core_mask: int
    collect_perf: bool
    eval_mem: bool
    async_mode: bool
    dump_layers: bool
    model_proof: bytes
    def __init__(self, client_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., core_mask: _Optional[int] = ..., collect_perf: _Optional[bool] = ..., eval_mem: _Optional[bool] = ..., async_mode: _Optional[bool] = ..., dump_layers: _Optional[bool] = ..., model_proof: _Optional[bytes] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session_id", "inputs", "outputs", "custom_string", "sdk_version", "is_simulator", "data_secret")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_STRING_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_SIMULATOR_FIELD_NUMBER: _ClassVar[int]
    DATA_SECRET_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorAttr]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorAttr]
    custom_string: str
    sdk_version: SdkVersion
    is_simulator: bool
    data_secret: bytes
    def __init__(self, session_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorAttr, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorAttr, _Mapping]]] = ..., custom_string: _Optional[str] = ..., sdk_version: _Optional[_Union[SdkVersion, _Mapping]] = ..., is_simulator: _Optional[bool] = ..., data_secret: _Optional[bytes] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RelayFrame(_message.Message):
    __slots__ = ("frame",)
    FRAME_FIELD_NUMBER: _ClassVar[int]
    frame: bytes
    def __init__(self, frame: _Optional[bytes] = ...) -> None: ...

class PerfRow(_message.Message):
    __slots__ = ("id", "op_type", "data_type", "target", "input_shape", "output_shape", "cycles", "time_us", "mac_usage", "workload", "rw_kb", "full_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    CYCLES_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    MAC_USAGE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    RW_KB_FIELD_NUMBER: _ClassVar[int]
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    op_type: str
    data_type: str
    target: str
    input_shape: str
    output_shape: str
    cycles: str
    time_us: float
    mac_usage: str
    workload: str
    rw_kb: float
    full_name: str
    def __init__(self, id: _Optional[int] = ..., op_type: _Optional[str] = ..., data_type: _Optional[str] = ..., target: _Optional[str] = ..., input_shape: _Optional[str] = ..., output_shape: _Optional[str] = ..., cycles: _Optional[str] = ..., time_us: _Optional[float] = ..., mac_usage: _Optional[str] = ..., workload: _Optional[str] = ..., rw_kb: _Optional[float] = ..., full_name: _Optional[str] = ...) -> None: ...

class PerfReport(_message.Message):
    __slots__ = ("text", "rows", "total_us")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    text: str
    rows: _containers.RepeatedCompositeFieldContainer[PerfRow]
    total_us: int
    def __init__(self, text: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[PerfRow, _Mapping]]] = ..., total_us: _Optional[int] = ...) -> None: ...

class PerfRunResponse(_message.Message):
    __slots__ = ("run_us",)
    RUN_US_FIELD_NUMBER: _ClassVar[int]
    run_us: int
    def __init__(self, run_us: _Optional[int] = ...) -> None: ...

class MemoryReport(_message.Message):
    __slots__ = ("total_weight_size", "total_internal_size", "total_dma_allocated_size", "total_sram_size", "free_sram_size")
    TOTAL_WEIGHT_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_INTERNAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DMA_ALLOCATED_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SRAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    FREE_SRAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    total_weight_size: int
    total_internal_size: int
    total_dma_allocated_size: int
    total_sram_size: int
    free_sram_size: int
    def __init__(self, total_weight_size: _Optional[int] = ..., total_internal_size: _Optional[int] = ..., total_dma_allocated_size: _Optional[int] = ..., total_sram_size: _Optional[int] = ..., free_sram_size: _Optional[int] = ...) -> None: ...

class SdkVersion(_message.Message):
    __slots__ = ("api_version", "drv_version")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRV_VERSION_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    drv_version: str
    def __init__(self, api_version: _Optional[str] = ..., drv_version: _Optional[str] = ...) -> None: ...

class DumpsRequest(_message.Message):
    __slots__ = ("session_id", "include_raw")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RAW_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    include_raw: bool
    def __init__(self, session_id: _Optional[str] = ..., include_raw: _Optional[bool] = ...) -> None: ...

class DumpInfo(_message.Message):
    __slots__ = ("index", "layer_index", "output_slot", "name", "dtype", "qnt_type", "scale", "zp", "dims")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LAYER_INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SLOT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    QNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZP_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    index: int
    layer_index: int
    output_slot: int
    name: str
    dtype: DataType
    qnt_type: int
    scale: float
    zp: int
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., layer_index: _Optional[int] = ..., output_slot: _Optional[int] = ..., name: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., qnt_type: _Optional[int] = ..., scale: _Optional[float] = ..., zp: _Optional[int] = ..., dims: _Optional[_Iterable[int]] = ...) -> None: ...

class DumpChunk(_message.Message):
    __slots__ = ("index", "info", "part", "offset", "part_size", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PART_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    info: DumpInfo
    part: DumpPart
    offset: int
    part_size: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., info: _Optional[_Union[DumpInfo, _Mapping]] = ..., part: _Optional[_Union[DumpPart, str]] = ..., offset: _Optional[int] = ..., part_size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionStat(_message.Message):
    __slots__ = ("session_id", "client_id", "model_sha256", "worker_pid", "inferences")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    WORKER_PID_FIELD_NUMBER: _ClassVar[int]
    INFERENCES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    client_id: str
    model_sha256: str
    worker_pid: int
    inferences: int
    def __init__(self, session_id: _Optional[str] = ..., client_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., worker_pid: _Optional[int] = ..., inferences: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("model_bytes_received", "uploads_completed", "uploads_aborted", "models_cached", "cache_bytes", "sessions_open", "clients", "workers_crashed", "inferences", "sessions", "daemon_pid")
    MODEL_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_ABORTED_FIELD_NUMBER: _ClassVar[int]
    MODELS_CACHED_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_OPEN_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_CRASHED_FIELD_NUMBER: _ClassVar[int]
    INFERENCES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    DAEMON_PID_FIELD_NUMBER: _ClassVar[int]
    model_bytes_received: int
    uploads_completed: int
    uploads_aborted: int
    models_cached: int
    cache_bytes: int
    sessions_open: int
    clients: int
    workers_crashed: int
    inferences: int
    sessions: _containers.RepeatedCompositeFieldContainer[SessionStat]
    daemon_pid: int
    def __init__(self, model_bytes_received: _Optional[int] = ..., uploads_completed: _Optional[int] = ..., uploads_aborted: _Optional[int] = ..., models_cached: _Optional[int] = ..., cache_bytes: _Optional[int] = ..., sessions_open: _Optional[int] = ..., clients: _Optional[int] = ..., workers_crashed: _Optional[int] = ..., inferences: _Optional[int] = ..., sessions: _Optional[_Iterable[_Union[SessionStat, _Mapping]]] = ..., daemon_pid: _Optional[int] = ...) -> None: ...

"""ctypes mirrors of the librknnrt C ABI (rknn_api.h, SDK 2.3.2) and of the rknnlink simulator extensions.

Layouts follow the vendor header field by field; the sizes are asserted at import, so a platform whose C
layout differs (the binding would silently corrupt memory there) fails loudly instead.
"""

from __future__ import annotations

import ctypes
import platform
from typing import Dict

# --- rknn_context: uint32_t on 32-bit ARM (__arm__), uint64_t everywhere else
_POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)
IS_ARM32 = _POINTER_SIZE == 4 and platform.machine().lower().startswith("arm")
rknn_context = ctypes.c_uint32 if IS_ARM32 else ctypes.c_uint64

RKNN_MAX_DIMS = 16
RKNN_MAX_NAME_LEN = 256

# --- rknn_init flags
RKNN_FLAG_PRIOR_HIGH = 0x0
RKNN_FLAG_PRIOR_MEDIUM = 0x1
RKNN_FLAG_PRIOR_LOW = 0x2
RKNN_FLAG_ASYNC_MASK = 0x4
RKNN_FLAG_COLLECT_PERF_MASK = 0x8
RKNN_FLAG_MEM_ALLOC_OUTSIDE = 0x10
RKNN_FLAG_SHARE_WEIGHT_MEM = 0x20
RKNN_FLAG_FENCE_IN_OUTSIDE = 0x40
RKNN_FLAG_FENCE_OUT_OUTSIDE = 0x80
RKNN_FLAG_COLLECT_MODEL_INFO_ONLY = 0x100
RKNN_FLAG_INTERNAL_ALLOC_OUTSIDE = 0x200
RKNN_FLAG_EXECUTE_FALLBACK_PRIOR_DEVICE_GPU = 0x400
RKNN_FLAG_ENABLE_SRAM = 0x800
RKNN_FLAG_SHARE_SRAM = 0x1000
RKNN_FLAG_DISABLE_PROC_HIGH_PRIORITY = 0x2000
RKNN_FLAG_DISABLE_FLUSH_INPUT_MEM_CACHE = 0x4000
RKNN_FLAG_DISABLE_FLUSH_OUTPUT_MEM_CACHE = 0x8000
RKNN_FLAG_MODEL_BUFFER_ZERO_COPY = 0x10000
RKNN_MEM_FLAG_ALLOC_NO_CONTEXT = 0x20000

# --- error codes
RKNN_SUCC = 0
ERROR_NAMES: Dict[int, str] = {
    0: "RKNN_SUCC",
    -1: "RKNN_ERR_FAIL",
    -2: "RKNN_ERR_TIMEOUT",
    -3: "RKNN_ERR_DEVICE_UNAVAILABLE",
    -4: "RKNN_ERR_MALLOC_FAIL",
    -5: "RKNN_ERR_PARAM_INVALID",
    -6: "RKNN_ERR_MODEL_INVALID",
    -7: "RKNN_ERR_CTX_INVALID",
    -8: "RKNN_ERR_INPUT_INVALID",
    -9: "RKNN_ERR_OUTPUT_INVALID",
    -10: "RKNN_ERR_DEVICE_UNMATCH",
    -11: "RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL",
    -12: "RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION",
    -13: "RKNN_ERR_TARGET_PLATFORM_UNMATCH",
    -14: "RKNN_WARNING_SKIP_CUSTOM_OP_COMPUTE",
}
ERROR_CODES: Dict[str, int] = {name: code for code, name in ERROR_NAMES.items()}
RKNN_ERR_FAIL = -1
RKNN_ERR_TIMEOUT = -2
RKNN_ERR_DEVICE_UNAVAILABLE = -3
RKNN_ERR_MALLOC_FAIL = -4
RKNN_ERR_PARAM_INVALID = -5
RKNN_ERR_MODEL_INVALID = -6
RKNN_ERR_CTX_INVALID = -7
RKNN_ERR_INPUT_INVALID = -8
RKNN_ERR_OUTPUT_INVALID = -9
RKNN_ERR_DEVICE_UNMATCH = -10
RKNN_ERR_TARGET_PLATFORM_UNMATCH = -13

# --- rknn_query_cmd
RKNN_QUERY_IN_OUT_NUM = 0
RKNN_QUERY_INPUT_ATTR = 1
RKNN_QUERY_OUTPUT_ATTR = 2
RKNN_QUERY_PERF_DETAIL = 3
RKNN_QUERY_PERF_RUN = 4
RKNN_QUERY_SDK_VERSION = 5
RKNN_QUERY_MEM_SIZE = 6
RKNN_QUERY_CUSTOM_STRING = 7
RKNN_QUERY_NATIVE_INPUT_ATTR = 8
RKNN_QUERY_NATIVE_OUTPUT_ATTR = 9
RKNN_QUERY_NATIVE_NHWC_INPUT_ATTR = 10
RKNN_QUERY_NATIVE_NHWC_OUTPUT_ATTR = 11
RKNN_QUERY_DEVICE_MEM_INFO = 12
RKNN_QUERY_INPUT_DYNAMIC_RANGE = 13
RKNN_QUERY_CURRENT_INPUT_ATTR = 14
RKNN_QUERY_CURRENT_OUTPUT_ATTR = 15
RKNN_QUERY_CURRENT_NATIVE_INPUT_ATTR = 16
RKNN_QUERY_CURRENT_NATIVE_OUTPUT_ATTR = 17

# --- rknn_tensor_type
RKNN_TENSOR_FLOAT32 = 0
RKNN_TENSOR_FLOAT16 = 1
RKNN_TENSOR_INT8 = 2
RKNN_TENSOR_UINT8 = 3
RKNN_TENSOR_INT16 = 4
RKNN_TENSOR_UINT16 = 5
RKNN_TENSOR_INT32 = 6
RKNN_TENSOR_UINT32 = 7
RKNN_TENSOR_INT64 = 8
RKNN_TENSOR_BOOL = 9
RKNN_TENSOR_INT4 = 10
RKNN_TENSOR_BFLOAT16 = 11
TYPE_NAMES: Dict[int, str] = {
    0: "FP32", 1: "FP16", 2: "INT8", 3: "UINT8", 4: "INT16", 5: "UINT16", 6: "INT32", 7: "UINT32",
    8: "INT64", 9: "BOOL", 10: "INT4", 11: "BF16",
}

# --- rknn_tensor_qnt_type / rknn_tensor_format / rknn_core_mask
RKNN_TENSOR_QNT_NONE = 0
RKNN_TENSOR_QNT_DFP = 1
RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC = 2
QNT_NAMES: Dict[int, str] = {0: "NONE", 1: "DFP", 2: "AFFINE", 3: "PER_CHANNEL"}

RKNN_TENSOR_NCHW = 0
RKNN_TENSOR_NHWC = 1
RKNN_TENSOR_NC1HWC2 = 2
RKNN_TENSOR_UNDEFINED = 3
FORMAT_NAMES: Dict[int, str] = {0: "NCHW", 1: "NHWC", 2: "NC1HWC2", 3: "UNDEFINED"}

RKNN_NPU_CORE_AUTO = 0
RKNN_NPU_CORE_0 = 1
RKNN_NPU_CORE_1 = 2
RKNN_NPU_CORE_2 = 4
RKNN_NPU_CORE_0_1 = 3
RKNN_NPU_CORE_0_1_2 = 7
RKNN_NPU_CORE_ALL = 0xFFFF


# --- structs
class RknnInputOutputNum(ctypes.Structure):
    _fields_ = [("n_input", ctypes.c_uint32), ("n_output", ctypes.c_uint32)]


class RknnTensorAttr(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("n_dims", ctypes.c_uint32),
        ("dims", ctypes.c_uint32 * RKNN_MAX_DIMS),
        ("name", ctypes.c_char * RKNN_MAX_NAME_LEN),
        ("n_elems", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("fmt", ctypes.c_int),
        ("type", ctypes.c_int),
        ("qnt_type", ctypes.c_int),
        ("fl", ctypes.c_int8),
        ("zp", ctypes.c_int32),
        ("scale", ctypes.c_float),
        ("w_stride", ctypes.c_uint32),
        ("size_with_stride", ctypes.c_uint32),
        ("pass_through", ctypes.c_uint8),
        ("h_stride", ctypes.c_uint32),
    ]


class RknnInputRange(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("shape_number", ctypes.c_uint32),
        ("fmt", ctypes.c_int),
        ("name", ctypes.c_char * RKNN_MAX_NAME_LEN),
        ("dyn_range", (ctypes.c_uint32 * RKNN_MAX_DIMS) * 512),
        ("n_dims", ctypes.c_uint32),
    ]


class RknnPerfDetail(ctypes.Structure):
    _fields_ = [("perf_data", ctypes.c_void_p), ("data_len", ctypes.c_uint64)]


class RknnPerfRun(ctypes.Structure):
    _fields_ = [("run_duration", ctypes.c_int64)]


class RknnSdkVersion(ctypes.Structure):
    _fields_ = [("api_version", ctypes.c_char * 256), ("drv_version", ctypes.c_char * 256)]


class RknnMemSize(ctypes.Structure):
    _fields_ = [
        ("total_weight_size", ctypes.c_uint32),
        ("total_internal_size", ctypes.c_uint32),
        ("total_dma_allocated_size", ctypes.c_uint64),
        ("total_sram_size", ctypes.c_uint32),
        ("free_sram_size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 10),
    ]


class RknnCustomString(ctypes.Structure):
    _fields_ = [("string", ctypes.c_char * 1024)]


class RknnTensorMem(ctypes.Structure):
    _fields_ = [
        ("virt_addr", ctypes.c_void_p),
        ("phys_addr", ctypes.c_uint64),
        ("fd", ctypes.c_int32),
        ("offset", ctypes.c_int32),
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("priv_data", ctypes.c_void_p),
    ]


class RknnInput(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("buf", ctypes.c_void_p),
        ("size", ctypes.c_uint32),
        ("pass_through", ctypes.c_uint8),
        ("type", ctypes.c_int),
        ("fmt", ctypes.c_int),
    ]


class RknnOutput(ctypes.Structure):
    _fields_ = [
        ("want_float", ctypes.c_uint8),
        ("is_prealloc", ctypes.c_uint8),
        ("index", ctypes.c_uint32),
        ("buf", ctypes.c_void_p),
        ("size", ctypes.c_uint32),
    ]


class RknnInitExtend(ctypes.Structure):
    _fields_ = [
        ("ctx", rknn_context),
        ("real_model_offset", ctypes.c_int32),
        ("real_model_size", ctypes.c_uint32),
        ("model_buffer_fd", ctypes.c_int32),
        ("model_buffer_flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint8 * 112),
    ]


class RknnRunExtend(ctypes.Structure):
    _fields_ = [
        ("frame_id", ctypes.c_uint64),
        ("non_block", ctypes.c_int32),
        ("timeout_ms", ctypes.c_int32),
        ("fence_fd", ctypes.c_int32),
    ]


class RknnOutputExtend(ctypes.Structure):
    _fields_ = [("frame_id", ctypes.c_uint64)]


# --- rknnlink simulator extensions (runtime_c/include/rknnlink_sim.h)
class RknnlinkLayerInfo(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("n_outputs", ctypes.c_uint32),
        ("name", ctypes.c_char * 256),
        ("op_type", ctypes.c_char * 64),
        ("onnx_type", ctypes.c_char * 64),
        ("dtype", ctypes.c_uint32),
        ("n_dims", ctypes.c_uint32),
        ("dims", ctypes.c_uint32 * 8),
        ("macs", ctypes.c_uint64),
        ("bytes_rw", ctypes.c_uint64),
        ("est_time_us", ctypes.c_double),
        ("measured_time_us", ctypes.c_double),
        ("cost_class", ctypes.c_uint32),
        ("reserved0", ctypes.c_uint32),
        ("act_elems", ctypes.c_uint64),
        ("reserved", ctypes.c_uint8 * 24),
    ]


# rknnlink_cost_class (rknnlink_sim.h): the unit a layer is charged on (docs/cost-model.md).
COST_CLASS_NAMES = {0: "free", 1: "dense", 2: "depthwise", 3: "eltwise", 4: "move"}


class RknnlinkPlatformInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 32),
        ("cores", ctypes.c_uint32),
        ("perf_detail", ctypes.c_uint32),
        ("npu_hz", ctypes.c_double),
        ("peak_int8_macs_per_cycle", ctypes.c_double),
        ("fp16_ratio", ctypes.c_double),
        ("dense_macs_per_cycle", ctypes.c_double),
        ("depthwise_macs_per_cycle", ctypes.c_double),
        ("eltwise_per_cycle", ctypes.c_double),
        ("activation_per_cycle", ctypes.c_double),
        ("ddr_bytes_per_s", ctypes.c_double),
        ("layer_overhead_us", ctypes.c_double),
        ("io_bytes_per_s", ctypes.c_double),
        ("reserved", ctypes.c_uint8 * 24),
    ]


class RknnlinkDumpInfo(ctypes.Structure):
    _fields_ = [
        ("layer_index", ctypes.c_uint32),
        ("output_slot", ctypes.c_uint32),
        ("name", ctypes.c_char * 256),
        ("dtype", ctypes.c_uint32),
        ("qnt_type", ctypes.c_uint32),
        ("scale", ctypes.c_float),
        ("zp", ctypes.c_int32),
        ("n_dims", ctypes.c_uint32),
        ("dims", ctypes.c_uint32 * 8),
        ("n_elems", ctypes.c_uint32),
        ("reserved", ctypes.c_uint8 * 4),
    ]


# Sizes from the reference (x86_64/aarch64, armv7). A mismatch means the binding would corrupt memory.
_EXPECTED_SIZES = {
    RknnInputOutputNum: (8, 8),
    RknnTensorAttr: (376, 376),
    RknnInputRange: (33040, 33040),
    RknnPerfDetail: (16, 16),
    RknnPerfRun: (8, 8),
    RknnSdkVersion: (512, 512),
    RknnMemSize: (64, 64),
    RknnCustomString: (1024, 1024),
    RknnTensorMem: (40, 40),
    RknnInput: (32, 24),
    RknnOutput: (24, 16),
    RknnInitExtend: (136, 132),
    RknnRunExtend: (24, 24),
    RknnOutputExtend: (8, 8),
    # rknnlink_sim.h's comments say 512 and 320, but its fields add up to 504 and 324 (checked with gcc).
    RknnlinkLayerInfo: (504, 504),
    RknnlinkDumpInfo: (324, 324),
}


def _check_sizes() -> None:
    """Fail at import when a struct does not have the vendor size on this platform."""
    column = 0 if _POINTER_SIZE == 8 else 1
    for struct, sizes in _EXPECTED_SIZES.items():
        actual = ctypes.sizeof(struct)
        if _POINTER_SIZE == 4 and not IS_ARM32 and struct in (RknnPerfDetail, RknnTensorMem, RknnRunExtend,
                                                             RknnOutputExtend, RknnMemSize, RknnInitExtend):
            continue  # i386 aligns 8-byte members to 4; not a supported board ABI
        if actual != sizes[column]:
            raise ImportError(
                f"ctypes layout of {struct.__name__} is {actual} bytes but librknnrt expects {sizes[column]} "
                f"on this platform ({platform.machine()}); the rknnlink binding cannot be used here")


_check_sizes()

/*
 * ABI probe: prints every struct size/alignment, field offset, enum value and constant of
 * include/rknn_api.h as "size NAME N", "align NAME N", "offset STRUCT.FIELD N", "value NAME N".
 * tests/runtime_c/test_abi.py compares the output with the reference tables.
 */
#include <stddef.h>
#include <stdio.h>

#include "rknn_api.h"

#define SZ(T) printf("size %s %zu\nalign %s %zu\n", #T, sizeof(T), #T, _Alignof(T))
#define OFF(T, F) printf("offset %s.%s %zu\n", #T, #F, offsetof(T, F))
#define VAL(N) printf("value %s %lld\n", #N, (long long)(N))

int main(void)
{
    SZ(rknn_context);
    SZ(rknn_input_output_num); OFF(rknn_input_output_num, n_input); OFF(rknn_input_output_num, n_output);
    SZ(rknn_tensor_attr);
    OFF(rknn_tensor_attr, index); OFF(rknn_tensor_attr, n_dims); OFF(rknn_tensor_attr, dims);
    OFF(rknn_tensor_attr, name); OFF(rknn_tensor_attr, n_elems); OFF(rknn_tensor_attr, size);
    OFF(rknn_tensor_attr, fmt); OFF(rknn_tensor_attr, type); OFF(rknn_tensor_attr, qnt_type);
    OFF(rknn_tensor_attr, fl); OFF(rknn_tensor_attr, zp); OFF(rknn_tensor_attr, scale);
    OFF(rknn_tensor_attr, w_stride); OFF(rknn_tensor_attr, size_with_stride);
    OFF(rknn_tensor_attr, pass_through); OFF(rknn_tensor_attr, h_stride);
    SZ(rknn_input_range);
    OFF(rknn_input_range, index); OFF(rknn_input_range, shape_number); OFF(rknn_input_range, fmt);
    OFF(rknn_input_range, name); OFF(rknn_input_range, dyn_range); OFF(rknn_input_range, n_dims);
    SZ(rknn_perf_detail); OFF(rknn_perf_detail, perf_data); OFF(rknn_perf_detail, data_len);
    SZ(rknn_perf_run); OFF(rknn_perf_run, run_duration);
    SZ(rknn_sdk_version); OFF(rknn_sdk_version, api_version); OFF(rknn_sdk_version, drv_version);
    SZ(rknn_mem_size);
    OFF(rknn_mem_size, total_weight_size); OFF(rknn_mem_size, total_internal_size);
    OFF(rknn_mem_size, total_dma_allocated_size); OFF(rknn_mem_size, total_sram_size);
    OFF(rknn_mem_size, free_sram_size); OFF(rknn_mem_size, reserved);
    SZ(rknn_custom_string); OFF(rknn_custom_string, string);
    SZ(rknn_tensor_mem);
    OFF(rknn_tensor_mem, virt_addr); OFF(rknn_tensor_mem, phys_addr); OFF(rknn_tensor_mem, fd);
    OFF(rknn_tensor_mem, offset); OFF(rknn_tensor_mem, size); OFF(rknn_tensor_mem, flags);
    OFF(rknn_tensor_mem, priv_data);
    SZ(rknn_input);
    OFF(rknn_input, index); OFF(rknn_input, buf); OFF(rknn_input, size); OFF(rknn_input, pass_through);
    OFF(rknn_input, type); OFF(rknn_input, fmt);
    SZ(rknn_output);
    OFF(rknn_output, want_float); OFF(rknn_output, is_prealloc); OFF(rknn_output, index); OFF(rknn_output, buf);
    OFF(rknn_output, size);
    SZ(rknn_init_extend);
    OFF(rknn_init_extend, ctx); OFF(rknn_init_extend, real_model_offset); OFF(rknn_init_extend, real_model_size);
    OFF(rknn_init_extend, model_buffer_fd); OFF(rknn_init_extend, model_buffer_flags);
    OFF(rknn_init_extend, reserved);
    SZ(rknn_run_extend);
    OFF(rknn_run_extend, frame_id); OFF(rknn_run_extend, non_block); OFF(rknn_run_extend, timeout_ms);
    OFF(rknn_run_extend, fence_fd);
    SZ(rknn_output_extend); OFF(rknn_output_extend, frame_id);
    SZ(rknn_query_cmd); SZ(rknn_tensor_type); SZ(rknn_tensor_qnt_type); SZ(rknn_tensor_format);
    SZ(rknn_core_mask); SZ(rknn_tensor_mem_flags); SZ(rknn_mem_alloc_flags); SZ(rknn_mem_sync_mode);

    VAL(RKNN_FLAG_PRIOR_HIGH); VAL(RKNN_FLAG_PRIOR_MEDIUM); VAL(RKNN_FLAG_PRIOR_LOW); VAL(RKNN_FLAG_ASYNC_MASK);
    VAL(RKNN_FLAG_COLLECT_PERF_MASK); VAL(RKNN_FLAG_MEM_ALLOC_OUTSIDE); VAL(RKNN_FLAG_SHARE_WEIGHT_MEM);
    VAL(RKNN_FLAG_FENCE_IN_OUTSIDE); VAL(RKNN_FLAG_FENCE_OUT_OUTSIDE); VAL(RKNN_FLAG_COLLECT_MODEL_INFO_ONLY);
    VAL(RKNN_FLAG_INTERNAL_ALLOC_OUTSIDE); VAL(RKNN_FLAG_EXECUTE_FALLBACK_PRIOR_DEVICE_GPU);
    VAL(RKNN_FLAG_ENABLE_SRAM); VAL(RKNN_FLAG_SHARE_SRAM); VAL(RKNN_FLAG_DISABLE_PROC_HIGH_PRIORITY);
    VAL(RKNN_FLAG_DISABLE_FLUSH_INPUT_MEM_CACHE); VAL(RKNN_FLAG_DISABLE_FLUSH_OUTPUT_MEM_CACHE);
    VAL(RKNN_FLAG_MODEL_BUFFER_ZERO_COPY); VAL(RKNN_MEM_FLAG_ALLOC_NO_CONTEXT);
    VAL(RKNN_SUCC); VAL(RKNN_ERR_FAIL); VAL(RKNN_ERR_TIMEOUT); VAL(RKNN_ERR_DEVICE_UNAVAILABLE);
    VAL(RKNN_ERR_MALLOC_FAIL); VAL(RKNN_ERR_PARAM_INVALID); VAL(RKNN_ERR_MODEL_INVALID); VAL(RKNN_ERR_CTX_INVALID);
    VAL(RKNN_ERR_INPUT_INVALID); VAL(RKNN_ERR_OUTPUT_INVALID); VAL(RKNN_ERR_DEVICE_UNMATCH);
    VAL(RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL); VAL(RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION);
    VAL(RKNN_ERR_TARGET_PLATFORM_UNMATCH);
    VAL(RKNN_MAX_DIMS); VAL(RKNN_MAX_NUM_CHANNEL); VAL(RKNN_MAX_NAME_LEN); VAL(RKNN_MAX_DYNAMIC_SHAPE_NUM);
    VAL(RKNN_QUERY_IN_OUT_NUM); VAL(RKNN_QUERY_INPUT_ATTR); VAL(RKNN_QUERY_OUTPUT_ATTR); VAL(RKNN_QUERY_PERF_DETAIL);
    VAL(RKNN_QUERY_PERF_RUN); VAL(RKNN_QUERY_SDK_VERSION); VAL(RKNN_QUERY_MEM_SIZE); VAL(RKNN_QUERY_CUSTOM_STRING);
    VAL(RKNN_QUERY_NATIVE_INPUT_ATTR); VAL(RKNN_QUERY_NATIVE_OUTPUT_ATTR); VAL(RKNN_QUERY_NATIVE_NC1HWC2_INPUT_ATTR);
    VAL(RKNN_QUERY_NATIVE_NC1HWC2_OUTPUT_ATTR); VAL(RKNN_QUERY_NATIVE_NHWC_INPUT_ATTR);
    VAL(RKNN_QUERY_NATIVE_NHWC_OUTPUT_ATTR); VAL(RKNN_QUERY_DEVICE_MEM_INFO); VAL(RKNN_QUERY_INPUT_DYNAMIC_RANGE);
    VAL(RKNN_QUERY_CURRENT_INPUT_ATTR); VAL(RKNN_QUERY_CURRENT_OUTPUT_ATTR); VAL(RKNN_QUERY_CURRENT_NATIVE_INPUT_ATTR);
    VAL(RKNN_QUERY_CURRENT_NATIVE_OUTPUT_ATTR); VAL(RKNN_QUERY_CMD_MAX);
    VAL(RKNN_TENSOR_FLOAT32); VAL(RKNN_TENSOR_FLOAT16); VAL(RKNN_TENSOR_INT8); VAL(RKNN_TENSOR_UINT8);
    VAL(RKNN_TENSOR_INT16); VAL(RKNN_TENSOR_UINT16); VAL(RKNN_TENSOR_INT32); VAL(RKNN_TENSOR_UINT32);
    VAL(RKNN_TENSOR_INT64); VAL(RKNN_TENSOR_BOOL); VAL(RKNN_TENSOR_INT4); VAL(RKNN_TENSOR_BFLOAT16);
    VAL(RKNN_TENSOR_TYPE_MAX);
    VAL(RKNN_TENSOR_QNT_NONE); VAL(RKNN_TENSOR_QNT_DFP); VAL(RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC);
    VAL(RKNN_TENSOR_QNT_MAX);
    VAL(RKNN_TENSOR_NCHW); VAL(RKNN_TENSOR_NHWC); VAL(RKNN_TENSOR_NC1HWC2); VAL(RKNN_TENSOR_UNDEFINED);
    VAL(RKNN_TENSOR_FORMAT_MAX);
    VAL(RKNN_NPU_CORE_AUTO); VAL(RKNN_NPU_CORE_0); VAL(RKNN_NPU_CORE_1); VAL(RKNN_NPU_CORE_2);
    VAL(RKNN_NPU_CORE_0_1); VAL(RKNN_NPU_CORE_0_1_2); VAL(RKNN_NPU_CORE_ALL); VAL(RKNN_NPU_CORE_UNDEFINED);
    VAL(RKNN_TENSOR_MEMORY_FLAGS_ALLOC_INSIDE); VAL(RKNN_TENSOR_MEMORY_FLAGS_FROM_FD);
    VAL(RKNN_TENSOR_MEMORY_FLAGS_FROM_PHYS); VAL(RKNN_TENSOR_MEMORY_FLAGS_UNKNOWN);
    VAL(RKNN_FLAG_MEMORY_FLAGS_DEFAULT); VAL(RKNN_FLAG_MEMORY_CACHEABLE); VAL(RKNN_FLAG_MEMORY_NON_CACHEABLE);
    VAL(RKNN_FLAG_MEMORY_TRY_ALLOC_SRAM);
    VAL(RKNN_MEMORY_SYNC_TO_DEVICE); VAL(RKNN_MEMORY_SYNC_FROM_DEVICE); VAL(RKNN_MEMORY_SYNC_BIDIRECTIONAL);
    return 0;
}

# 20-cuda.cmake - the CUDA driver/NVML test doubles and the CUDA backend's tests.

# The doubles are shared libraries that libvram dlopens in place of
# libcuda.so.1 / libnvidia-ml.so.1 (VRAM_CUDA_LIBRARY / VRAM_NVML_LIBRARY).
# They are built with the same flags as everything else, sanitizers included.
add_library(vram_cuda_double SHARED tests/cuda_double/libcuda_double.c)
set_target_properties(vram_cuda_double PROPERTIES
  OUTPUT_NAME cuda_double
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/cuda_double)
target_include_directories(vram_cuda_double PRIVATE
  ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/tests/cuda_double)
target_link_libraries(vram_cuda_double PRIVATE Threads::Threads)

add_library(vram_nvml_double SHARED tests/cuda_double/libnvml_double.c)
set_target_properties(vram_nvml_double PROPERTIES
  OUTPUT_NAME nvml_double
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/cuda_double)
target_include_directories(vram_nvml_double PRIVATE ${CMAKE_SOURCE_DIR}/tests/cuda_double)
target_link_libraries(vram_nvml_double PRIVATE Threads::Threads)

set(VRAM_CUDA_DOUBLE_FILE $<TARGET_FILE:vram_cuda_double>)
set(VRAM_NVML_DOUBLE_FILE $<TARGET_FILE:vram_nvml_double>)

# The GPU benchmark finds the double when asked for a dry run.
if(TARGET bench_gpu)
  add_dependencies(bench_gpu vram_cuda_double)
endif()

if(VRAM_BUILD_TESTS)
  # CUDA-specific cases: tests/unit/test_cuda.c (built by the unit-test glob).
  if(TARGET test_cuda)
    add_dependencies(test_cuda vram_cuda_double vram_nvml_double)
    target_include_directories(test_cuda PRIVATE ${CMAKE_SOURCE_DIR}/tests/cuda_double)
    target_compile_definitions(test_cuda PRIVATE
      VRAM_CUDA_DOUBLE_PATH="${VRAM_CUDA_DOUBLE_FILE}"
      VRAM_NVML_DOUBLE_PATH="${VRAM_NVML_DOUBLE_FILE}")
    set_tests_properties(unit/test_cuda PROPERTIES ENVIRONMENT
      "VRAM_CUDA_LIBRARY=${VRAM_CUDA_DOUBLE_FILE};VRAM_NVML_LIBRARY=${VRAM_NVML_DOUBLE_FILE}")
  endif()

  # The backend conformance suite (tests/unit/test_backend.c) on the CUDA
  # backend over the double. No skip code: with the double, the CUDA backend
  # must come up, so an exit 77 (ENODEV) is a failure here.
  if(TARGET test_backend)
    add_dependencies(test_backend vram_cuda_double)
    add_test(NAME unit/test_backend_cuda_double COMMAND test_backend)
    set_tests_properties(unit/test_backend_cuda_double PROPERTIES
      LABELS unit TIMEOUT ${VRAM_TEST_TIMEOUT}
      ENVIRONMENT "VRAM_TEST_BACKEND=cuda;VRAM_CUDA_LIBRARY=${VRAM_CUDA_DOUBLE_FILE};VRAM_DOUBLE_DEVICES=2;VRAM_DOUBLE_MEMORY=256M")

    # The same suite on the real driver (scripts/gpu-check); skipped (77)
    # where there is no driver or no device.
    add_test(NAME gpu/test_backend_cuda COMMAND test_backend)
    set_tests_properties(gpu/test_backend_cuda PROPERTIES
      LABELS gpu TIMEOUT 600 SKIP_RETURN_CODE 77
      ENVIRONMENT "VRAM_TEST_BACKEND=cuda;VRAM_CUDA_LIBRARY=libcuda.so.1")
  endif()
endif()

# scripts/gpu-check's dry run on the double, end to end (conformance,
# self-check, benchmark with small sizes), so the GPU check cannot rot where
# no GPU is lent.
if(VRAM_BUILD_TESTS AND TARGET test_backend AND TARGET test_cuda AND TARGET bench_gpu)
  add_test(NAME integration/gpu_check_dry_run
    COMMAND ${CMAKE_SOURCE_DIR}/scripts/gpu-check run --bin ${CMAKE_BINARY_DIR}
            --out ${CMAKE_BINARY_DIR}/gpu-check-dry-run --sizes 32M,96M --raw 64M)
  set_tests_properties(integration/gpu_check_dry_run PROPERTIES
    LABELS integration TIMEOUT ${VRAM_TEST_TIMEOUT}
    ENVIRONMENT "VRAM_CUDA_LIBRARY=${VRAM_CUDA_DOUBLE_FILE};VRAM_DOUBLE_MEMORY=256M;VRAM_DOUBLE_DEVICES=2")
endif()

# 30-fuzz.cmake - libFuzzer targets (VRAM_FUZZ=ON, clang only): fuzz_safetensors, fuzz_mcp, fuzz_http and their CTest smoke runs.
if(VRAM_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "VRAM_FUZZ=ON needs clang: cmake -DCMAKE_C_COMPILER=clang -DVRAM_FUZZ=ON")
  endif()
  set(VRAM_FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
      -fno-omit-frame-pointer -g)
  # The parser is compiled into the target (instrumented for coverage); the
  # rest (error details) comes from the library.
  add_executable(fuzz_safetensors fuzz/fuzz_safetensors.c src/loader/st_parse.c src/loader/st_json.c)
  target_include_directories(fuzz_safetensors PRIVATE include src)
  target_compile_definitions(fuzz_safetensors PRIVATE _GNU_SOURCE VRAM_BUILDING)
  target_compile_options(fuzz_safetensors PRIVATE ${VRAM_FUZZ_FLAGS})
  target_link_options(fuzz_safetensors PRIVATE ${VRAM_FUZZ_FLAGS})
  target_link_libraries(fuzz_safetensors PRIVATE vram_static PkgConfig::JANSSON)

  # The MCP dispatcher and the command table, compiled into the target (not
  # vram_server: that one carries HTTP and is built without the fuzz flags),
  # over the core library's host backend.
  add_executable(fuzz_mcp fuzz/fuzz_mcp.c src/server/mcp.c src/server/commands.c
    src/server/status_json.c src/server/commands_models.c src/server/models.c
    src/server/model_spec.c src/server/events.c src/server/commands_node.c src/server/node.c)
  target_include_directories(fuzz_mcp PRIVATE include src)
  target_compile_definitions(fuzz_mcp PRIVATE _GNU_SOURCE=)
  target_compile_options(fuzz_mcp PRIVATE ${VRAM_FUZZ_FLAGS})
  target_link_options(fuzz_mcp PRIVATE ${VRAM_FUZZ_FLAGS})
  target_link_libraries(fuzz_mcp PRIVATE vram_static PkgConfig::JANSSON Threads::Threads)

  # Raw HTTP through the real server: every server source compiled into the
  # target (instrumented), over libmicrohttpd and the core library.
  file(GLOB VRAM_FUZZ_SERVER_SOURCES CONFIGURE_DEPENDS src/server/*.c)
  add_executable(fuzz_http fuzz/fuzz_http.c ${VRAM_FUZZ_SERVER_SOURCES} ${VRAM_DASHBOARD_C})
  target_include_directories(fuzz_http PRIVATE include src)
  target_compile_definitions(fuzz_http PRIVATE _GNU_SOURCE= VRAM_BUILDING)
  target_compile_options(fuzz_http PRIVATE ${VRAM_FUZZ_FLAGS})
  target_link_options(fuzz_http PRIVATE ${VRAM_FUZZ_FLAGS})
  target_link_libraries(fuzz_http PRIVATE vram_static PkgConfig::MHD PkgConfig::JANSSON
    Threads::Threads)

  enable_testing()
  add_test(NAME fuzz/safetensors-smoke
    COMMAND ${CMAKE_SOURCE_DIR}/scripts/fuzz-smoke --target safetensors
            --binary $<TARGET_FILE:fuzz_safetensors>
            --seconds 30 --work ${CMAKE_BINARY_DIR}/fuzz-smoke)
  set_tests_properties(fuzz/safetensors-smoke PROPERTIES LABELS fuzz TIMEOUT 300)
  add_test(NAME fuzz/mcp-smoke
    COMMAND ${CMAKE_SOURCE_DIR}/scripts/fuzz-smoke --target mcp --binary $<TARGET_FILE:fuzz_mcp>
            --seconds 30 --work ${CMAKE_BINARY_DIR}/fuzz-smoke-mcp)
  set_tests_properties(fuzz/mcp-smoke PROPERTIES LABELS fuzz TIMEOUT 300)
  add_test(NAME fuzz/http-smoke
    COMMAND ${CMAKE_SOURCE_DIR}/scripts/fuzz-smoke --target http --binary $<TARGET_FILE:fuzz_http>
            --seconds 30 --work ${CMAKE_BINARY_DIR}/fuzz-smoke-http)
  set_tests_properties(fuzz/http-smoke PROPERTIES LABELS fuzz TIMEOUT 300)
endif()

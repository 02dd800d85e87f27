# 10-tools.cmake - vramd and vramctl, their server library (HTTP, MCP, metrics), install rules, integration and MCP tests.
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)

# libvram-server: the embeddable HTTP/MCP/metrics server (include/vram_server.h),
# built on libvram's public API and the stateless part of the base layer.
file(GLOB VRAM_SERVER_SOURCES CONFIGURE_DEPENDS src/server/*.c)
# the dashboard (src/server/dashboard.html) built into the library as a C array
set(VRAM_DASHBOARD_C ${CMAKE_BINARY_DIR}/generated/dashboard_html.c)
add_custom_command(OUTPUT ${VRAM_DASHBOARD_C}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/generated
  COMMAND ${CMAKE_COMMAND} -DIN=${CMAKE_SOURCE_DIR}/src/server/dashboard.html
          -DOUT=${VRAM_DASHBOARD_C} -DNAME=vram__dashboard_html
          -P ${CMAKE_SOURCE_DIR}/cmake/scripts/embed.cmake
  DEPENDS ${CMAKE_SOURCE_DIR}/src/server/dashboard.html ${CMAKE_SOURCE_DIR}/cmake/scripts/embed.cmake
  COMMENT "Embedding the dashboard")
list(APPEND VRAM_SERVER_SOURCES ${VRAM_DASHBOARD_C})
set(VRAM_BASE_PURE ${CMAKE_SOURCE_DIR}/src/base/text.c ${CMAKE_SOURCE_DIR}/src/base/clock.c
  ${CMAKE_SOURCE_DIR}/src/base/wire.c)
add_library(vram_server STATIC ${VRAM_SERVER_SOURCES})
set_target_properties(vram_server PROPERTIES OUTPUT_NAME vram-server)
target_include_directories(vram_server PUBLIC include src)
target_compile_definitions(vram_server PRIVATE VRAM_BUILDING _GNU_SOURCE=)
target_link_libraries(vram_server PUBLIC vram_static PkgConfig::MHD PkgConfig::JANSSON
                      Threads::Threads)

# the shared one carries its own copy of the stateless base helpers, since
# libvram.so exports only vram_ symbols
add_library(vram_server_shared SHARED ${VRAM_SERVER_SOURCES} ${VRAM_BASE_PURE})
set_target_properties(vram_server_shared PROPERTIES OUTPUT_NAME vram-server
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
target_include_directories(vram_server_shared PRIVATE include src)
target_compile_definitions(vram_server_shared PRIVATE VRAM_BUILDING _GNU_SOURCE=)
target_compile_options(vram_server_shared PRIVATE -fvisibility=hidden)
target_link_libraries(vram_server_shared PRIVATE vram_shared PkgConfig::MHD PkgConfig::JANSSON
                      Threads::Threads m)
configure_file(${CMAKE_SOURCE_DIR}/vram-server.pc.in vram-server.pc @ONLY)
install(TARGETS vram_server vram_server_shared
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES include/vram_server.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_BINARY_DIR}/vram-server.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

add_executable(vramd tools/vramd.c)
target_link_libraries(vramd PRIVATE vram_server)

# vramctl sees the public headers only (include/, tools/common)
file(GLOB VRAMCTL_SOURCES CONFIGURE_DEPENDS tools/vramctl/*.c)
add_executable(vramctl ${VRAMCTL_SOURCES})
target_include_directories(vramctl PRIVATE include)
target_compile_definitions(vramctl PRIVATE _GNU_SOURCE=)
target_link_libraries(vramctl PRIVATE vram_static vram_tools_common PkgConfig::CURL
                      PkgConfig::JANSSON Threads::Threads)

install(TARGETS vramd vramctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

if(VRAM_BUILD_TESTS)
  enable_testing()
  find_program(VRAM_PYTHON3 NAMES python3)
  # the node tests' member processes (C, so that they run under the
  # sanitizers too, where the Python package cannot load the instrumented
  # libvram.so; the Python member is used besides them otherwise):
  # node_member is driven by stdin lines, node_holder loads and holds
  foreach(prog node_member node_holder)
    add_executable(${prog} tests/support/${prog}.c)
    target_link_libraries(${prog} PRIVATE vram_static)
    target_compile_definitions(${prog} PRIVATE _GNU_SOURCE=)
  endforeach()
  if(VRAM_SANITIZE STREQUAL "")
    set(vram_python_member 1)
  else()
    set(vram_python_member 0)
  endif()
  set(VRAM_TOOL_ENV "VRAMD=$<TARGET_FILE:vramd>" "VRAMCTL=$<TARGET_FILE:vramctl>"
      "NODE_MEMBER=$<TARGET_FILE:node_member>"
      "EMBED_SERVER=$<TARGET_FILE:embed_server>"
      "VRAM_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
      # node members: the Python package (tests/support/node_member.py) and node_member
      "VRAM_LIBRARY=$<TARGET_FILE:vram_shared>" "VRAM_PYTHONPATH=${CMAKE_SOURCE_DIR}/python"
      "VRAM_NODE_MEMBER=$<TARGET_FILE:node_holder>" "VRAM_PYTHON_MEMBER=${vram_python_member}")

  # Integration tests: python3 (standard library only) driving vramd on a free port.
  file(GLOB VRAM_INTEGRATION_TESTS CONFIGURE_DEPENDS tests/integration/test_*.py)
  foreach(src ${VRAM_INTEGRATION_TESTS})
    get_filename_component(name ${src} NAME_WE)
    if(VRAM_PYTHON3)
      add_test(NAME integration/${name} COMMAND ${VRAM_PYTHON3} ${src})
    else()
      add_test(NAME integration/${name} COMMAND sh -c "echo 'python3 not found: skipped'; exit 77")
    endif()
    set_tests_properties(integration/${name} PROPERTIES LABELS integration TIMEOUT ${VRAM_TEST_TIMEOUT}
                         SKIP_RETURN_CODE 77 ENVIRONMENT "${VRAM_TOOL_ENV}")
  endforeach()
  if(TEST integration/test_seed)
    # the seed's curl lines name port 7861 (make run uses it too)
    set_tests_properties(integration/test_seed PROPERTIES RESOURCE_LOCK vram_port_7861)
  endif()

  # MCP: the official TypeScript SDK client over both transports, and the
  # official conformance suite (pinned in tests/mcp/package-lock.json).
  foreach(t sdk-http sdk-stdio conformance)
    add_test(NAME mcp/${t} COMMAND bash ${CMAKE_SOURCE_DIR}/tests/mcp/run ${t})
    set_tests_properties(mcp/${t} PROPERTIES LABELS integration TIMEOUT 600
                         SKIP_RETURN_CODE 77 RESOURCE_LOCK vram_tests_mcp
                         ENVIRONMENT "${VRAM_TOOL_ENV}")
  endforeach()
endif()

# 40-python.cmake - the gpu_manager Python package: install rule and its pytest suite (label python).
include(GNUInstallDirs)

# The package goes where Debian's python3 looks: <prefix>/lib/python3/dist-packages
# for prefix /usr (Debian's own packages), <prefix>/lib/python3.X/dist-packages
# otherwise (/usr/local/lib/python3.11/dist-packages is on Debian 12's sys.path).
# A generated _install.py tells it where the installed libvram.so.0 lives.
set(VRAM_TEST_PYTHON /usr/bin/python3 CACHE FILEPATH
    "Python interpreter (with torch, numpy and pytest) of the python tests and the install path")
set(VRAM_PYTHON_SITE "" CACHE STRING
    "Install directory of the gpu_manager package, relative to the prefix or absolute (default: Debian's dist-packages)")
set(vram_pysite "${VRAM_PYTHON_SITE}")
if(vram_pysite STREQUAL "")
  set(vram_pyver "3")
  if(EXISTS ${VRAM_TEST_PYTHON})
    execute_process(COMMAND ${VRAM_TEST_PYTHON} -c "import sys; print('%d.%d' % sys.version_info[:2])"
                    OUTPUT_VARIABLE vram_pyver OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr" OR vram_pyver STREQUAL "")
    set(vram_pysite "lib/python3/dist-packages")
  else()
    set(vram_pysite "lib/python${vram_pyver}/dist-packages")
  endif()
endif()
file(GLOB VRAM_PYTHON_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/python/gpu_manager/*.py)
list(FILTER VRAM_PYTHON_SOURCES EXCLUDE REGEX "/_install\\.py$")
install(FILES ${VRAM_PYTHON_SOURCES} DESTINATION ${vram_pysite}/gpu_manager)
if(IS_ABSOLUTE "${vram_pysite}")
  set(vram_pydest "${vram_pysite}")
else()
  set(vram_pydest "\${CMAKE_INSTALL_PREFIX}/${vram_pysite}")
endif()
install(CODE "
  set(_f \"\$ENV{DESTDIR}${vram_pydest}/gpu_manager/_install.py\")
  file(WRITE \"\${_f}\" \"# written by cmake --install: where libvram.so.0 and libvram-server.so.0 are\\nLIBDIR = '\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}'\\n\")
  message(STATUS \"Installing: \${_f}\")
")

if(VRAM_BUILD_TESTS)
  enable_testing()
  # Debian's python3-torch is visible to /usr/bin/python3 only; a missing
  # torch or pytest makes these tests fail, never skip.
  file(GLOB VRAM_PYTHON_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/python/test_*.py)
  file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/python-tests)
  foreach(src ${VRAM_PYTHON_TESTS})
    get_filename_component(name ${src} NAME_WE)
    add_test(NAME python/${name}
             COMMAND ${VRAM_TEST_PYTHON} -m pytest -q -p no:cacheprovider
                     --rootdir=${CMAKE_SOURCE_DIR}/tests/python ${src}
             WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/python-tests)
    set_tests_properties(python/${name} PROPERTIES LABELS python TIMEOUT 300
      ENVIRONMENT "PYTHONPATH=${CMAKE_SOURCE_DIR}/python;VRAMD=$<TARGET_FILE:vramd>;NODE_MEMBER=$<TARGET_FILE:node_member>;VRAM_LIBRARY=$<TARGET_FILE:vram_shared>;VRAM_SERVER_LIBRARY=$<TARGET_FILE:vram_server_shared>;VRAM_BACKEND=host;VRAM_HOST_MEMORY=256M;VRAM_HOST_DEVICES=1;VRAM_LOG_LEVEL=warn;VRAM_EVICT_WAIT=5;PYTHONDONTWRITEBYTECODE=1")
  endforeach()
  # the golden vectors of the checksum and the synthetic source match their
  # independent generator (written from include/vram.h, numpy for speed)
  add_test(NAME python/golden_vectors
           COMMAND ${VRAM_TEST_PYTHON} ${CMAKE_SOURCE_DIR}/tests/golden/make_golden.py --check)
  set_tests_properties(python/golden_vectors PROPERTIES LABELS python TIMEOUT 120)
endif()

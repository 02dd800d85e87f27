# 40-python.cmake - the gpu_manager Python package: install rule and its pytest suite (label python).
include(GNUInstallDirs)

# The package goes where Debian's python3 looks (dist-packages), with a small
# generated _install.py that tells it where the installed libvram.so.0 lives.
set(VRAM_PYTHON_INSTALL_DIR "${CMAKE_INSTALL_PREFIX}/lib/python3/dist-packages" CACHE PATH
    "Directory the gpu_manager Python package is installed into")
file(GLOB VRAM_PYTHON_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/python/gpu_manager/*.py)
list(FILTER VRAM_PYTHON_SOURCES EXCLUDE REGEX "/_install\\.py$")
install(FILES ${VRAM_PYTHON_SOURCES} DESTINATION ${VRAM_PYTHON_INSTALL_DIR}/gpu_manager)
install(CODE "
  file(WRITE \"\$ENV{DESTDIR}${VRAM_PYTHON_INSTALL_DIR}/gpu_manager/_install.py\"
    \"# written by cmake --install: where libvram.so.0 and libvram-server.so.0 are\\nLIBDIR = '${CMAKE_INSTALL_FULL_LIBDIR}'\\n\")
  message(STATUS \"Installing: \$ENV{DESTDIR}${VRAM_PYTHON_INSTALL_DIR}/gpu_manager/_install.py\")
")

if(VRAM_BUILD_TESTS)
  enable_testing()
  # Debian's python3-torch is visible to /usr/bin/python3 only; a missing
  # torch or pytest makes these tests fail, never skip.
  set(VRAM_TEST_PYTHON /usr/bin/python3 CACHE FILEPATH
      "Python interpreter (with torch, numpy and pytest) of the python tests")
  file(GLOB VRAM_PYTHON_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/python/test_*.py)
  file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/python-tests)
  foreach(src ${VRAM_PYTHON_TESTS})
    get_filename_component(name ${src} NAME_WE)
    add_test(NAME python/${name}
             COMMAND ${VRAM_TEST_PYTHON} -m pytest -q -p no:cacheprovider
                     --rootdir=${CMAKE_SOURCE_DIR}/tests/python ${src}
             WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/python-tests)
    set_tests_properties(python/${name} PROPERTIES LABELS python TIMEOUT 300
      ENVIRONMENT "PYTHONPATH=${CMAKE_SOURCE_DIR}/python;VRAM_LIBRARY=$<TARGET_FILE:vram_shared>;VRAM_SERVER_LIBRARY=$<TARGET_FILE:vram_server_shared>;VRAM_BACKEND=host;VRAM_HOST_MEMORY=256M;VRAM_HOST_DEVICES=1;VRAM_LOG_LEVEL=warn;VRAM_EVICT_WAIT=5;PYTHONDONTWRITEBYTECODE=1")
  endforeach()
endif()

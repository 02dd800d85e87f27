# 50-browser.cmake - the dashboard in a real browser: Debian's chromium driven by playwright-core (tests/browser), label integration.
if(VRAM_BUILD_TESTS)
  enable_testing()
  # screenshots of the run are kept under the build directory
  set(VRAM_BROWSER_OUT ${CMAKE_BINARY_DIR}/browser-artifacts)
  add_test(NAME browser/dashboard COMMAND bash ${CMAKE_SOURCE_DIR}/tests/browser/run)
  # a missing chromium or Node.js fails the test (no SKIP_RETURN_CODE)
  set_tests_properties(browser/dashboard PROPERTIES LABELS integration TIMEOUT ${VRAM_TEST_TIMEOUT}
    RESOURCE_LOCK vram_tests_browser
    ENVIRONMENT "VRAMD=$<TARGET_FILE:vramd>;VRAM_BROWSER_OUT=${VRAM_BROWSER_OUT};PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1;VRAM_NODE_MEMBER=$<TARGET_FILE:node_holder>")
endif()

# Makefile - the entry points: make (build), make run (the daemon with demo models), make test (everything).
BUILD   ?= build
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
MAKEFLAGS += --no-print-directory
CMAKE_FLAGS ?=

.PHONY: all build run test unit asan tsan bench soak fuzz clean format install

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The main job: vramd with two demo models (see README).
run:
	scripts/bootstrap build
	$(MAKE) build
	@if [ -x scripts/run-demo ]; then scripts/run-demo; else $(BUILD)/seed_flow; fi

# Everything: packages, build, all tests, a short fuzz run of the safetensors
# parser, then the unit and integration tests (vramd, vramctl) under
# ASan+UBSan and TSan.
# A skipped test fails the run unless it is GPU-only and there is no GPU
# (scripts/check-skips): a missing tool is an install failure, not a skip.
test:
	scripts/bootstrap test
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --output-junit ctest-junit.xml
	scripts/check-skips $(BUILD)/ctest-junit.xml
	scripts/fuzz-smoke --seconds 20
	$(MAKE) asan
	$(MAKE) tsan

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

asan:
	cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DVRAM_SANITIZE=address >/dev/null
	cmake --build $(BUILD)-asan -j $(JOBS)
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -L 'unit|integration' --output-junit ctest-junit.xml
	scripts/check-skips $(BUILD)-asan/ctest-junit.xml

# TSan is for the threaded code (the manager, the monitor, the server, vramd
# under clients). These three are single-threaded sweeps over gigabytes of
# copies (the backend conformance suite, every fault point, the GPU check's
# dry run); TSan's shadow memory makes them cost tens of minutes on a 2-core
# machine, so they run in the normal and ASan builds only.
TSAN_EXCLUDE = ^(unit/test_backend|unit/test_faults|integration/gpu_check_dry_run)$$

tsan:
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=Debug -DVRAM_SANITIZE=thread >/dev/null
	cmake --build $(BUILD)-tsan -j $(JOBS)
	cd $(BUILD)-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  setarch $$(uname -m) -R ctest --output-on-failure -j $(JOBS) -L 'unit|integration' \
	  -E '$(TSAN_EXCLUDE)' --output-junit ctest-junit.xml
	scripts/check-skips $(BUILD)-tsan/ctest-junit.xml

bench: build
	scripts/run-bench

# The soak run (not part of make test, a few minutes): offload/restore cycles
# over HTTP and the C API, clean and then with injected faults; RSS, open
# files and device memory must stay flat.
soak: build
	$(BUILD)/soak --cycles 4000
	$(BUILD)/soak --cycles 4000 --faults 20

fuzz:
	cmake -S . -B $(BUILD)-fuzz -DCMAKE_C_COMPILER=clang -DVRAM_FUZZ=ON -DVRAM_BUILD_TESTS=OFF >/dev/null
	cmake --build $(BUILD)-fuzz -j $(JOBS)

install: build
	cmake --install $(BUILD)

format:
	clang-format -i include/*.h src/*/*.[ch] tools/*.c tests/unit/*.c bench/*.c

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-fuzz

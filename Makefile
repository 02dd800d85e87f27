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
# ASan+UBSan and the unit tests under TSan.
test:
	scripts/bootstrap test
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	scripts/fuzz-smoke --seconds 20
	$(MAKE) asan
	$(MAKE) tsan

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

asan:
	cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DVRAM_SANITIZE=address >/dev/null
	cmake --build $(BUILD)-asan -j $(JOBS)
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -L 'unit|integration'

tsan:
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=Debug -DVRAM_SANITIZE=thread >/dev/null
	cmake --build $(BUILD)-tsan -j $(JOBS)
	cd $(BUILD)-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  setarch $$(uname -m) -R ctest --output-on-failure -j $(JOBS) -L unit

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

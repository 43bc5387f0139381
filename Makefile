# onnxd build. Entry points: `make run`, `make test`, `make bench`.
# Knobs: SANITIZE=address,undefined or SANITIZE=thread (build into build/san-*), WERROR=0, V=1.
SHELL := /bin/bash
.DEFAULT_GOAL := all

ROOT      := $(CURDIR)
SANITIZE  ?=
WERROR    ?= 1
PY        := $(ROOT)/.venv/bin/python
comma     := ,
ifeq ($(SANITIZE),)
  B := build
else
  B := build/san-$(subst $(comma),-,$(SANITIZE))
endif

# ---- ONNX Runtime: the system's (pkg-config) or the one scripts/fetch-ort.sh put in deps/ort.
ORT_PC := $(shell pkg-config --exists libonnxruntime 2>/dev/null && echo yes)
ifeq ($(ORT_PC),yes)
  ORT_CFLAGS := $(shell pkg-config --cflags libonnxruntime)
  ORT_LIBS   := $(shell pkg-config --libs libonnxruntime)
  ORT_STAMP  :=
else
  ORT_DIR    := $(ROOT)/deps/ort
  ORT_CFLAGS := -I$(ORT_DIR)/include
  ORT_LIBS   := -L$(ORT_DIR)/lib -lonnxruntime -Wl,-rpath,$(ORT_DIR)/lib
  ORT_STAMP  := $(ORT_DIR)/lib/libonnxruntime.so.1
endif
# the library file itself, bundled by `make dist`
ORT_LIB_FILE := $(or $(ORT_STAMP),$(shell pkg-config --variable=libdir libonnxruntime 2>/dev/null)/libonnxruntime.so.1)

CC  ?= cc
CXX ?= c++
WARN := -Wall -Wextra -Wformat=2 -Wvla -Walloca -Wshadow -Wno-unused-parameter
ifeq ($(WERROR),1)
  WARN += -Werror
endif
# image/: JPEG through libjpeg-turbo's TurboJPEG API, PNG through libspng
IMG_CFLAGS := $(shell pkg-config --cflags libturbojpeg spng 2>/dev/null)
IMG_LIBS   := $(shell pkg-config --libs libturbojpeg spng 2>/dev/null)
CPPFLAGS := -Isrc $(ORT_CFLAGS) $(shell pkg-config --cflags libpq) $(shell pkg-config --cflags libnghttp2) $(IMG_CFLAGS) -D_GNU_SOURCE -MMD -MP
ifeq ($(SANITIZE),)
  OPT := -O2 -g -D_FORTIFY_SOURCE=3 -fstack-protector-strong -fstack-clash-protection \
         -fcf-protection -fPIE
  LDHARD := -pie -Wl,-z,relro,-z,now,-z,noexecstack
else
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=$(SANITIZE) -fno-sanitize-recover=undefined
  LDHARD := -fsanitize=$(SANITIZE)
endif
CFLAGS   := -std=gnu11 $(OPT) $(WARN)
CXXFLAGS := -std=gnu++17 $(OPT) -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) \
            -fno-exceptions -fno-rtti -isystem /usr/include/dragonbox-1.1.3 \
            -Wno-maybe-uninitialized # GCC 12 false positive in dragonbox.h (-O1 + sanitizers)
LDLIBS   := $(ORT_LIBS) -llmdb -lhiredis $(shell pkg-config --libs libnghttp2) $(IMG_LIBS) -ldl -lpthread -lm

LIB_C   := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
LIB_C   := $(filter-out src/runtime/ort_embed.c,$(LIB_C)) # the single file's, below
LIB_CXX := $(shell find src -name '*.cc' | sort)
LIB_OBJ := $(LIB_C:%.c=$(B)/obj/%.o) $(LIB_CXX:%.cc=$(B)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/*_test.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%.c=$(B)/fuzz-replay/%)

.PHONY: all setup deps models run test test-unit test-fuzz test-integration test-conformance \
        bench soak fuzz format format-check check-layers clean
BENCH_BIN := $(if $(wildcard bench/loadgen.c),$(B)/onnxd-bench) $(if $(wildcard bench/ort_limit.c),$(B)/onnxd-ort-limit) \
             $(if $(wildcard bench/feature_bench.c),$(B)/onnxd-feature-bench) \
             $(if $(wildcard bench/grpc_loadgen.c),$(B)/onnxd-grpc-bench) $(B)/onnxd-img-limit
all: $(B)/onnxd $(UNIT_BIN) $(FUZZ_REPLAY) $(BENCH_BIN) $(B)/tests/onnxd-imgtool

# ---- set-up: packages, ONNX Runtime, Python venv (idempotent, fast when done)
setup: .stamp-setup
.stamp-setup: scripts/setup.sh requirements.txt tests/integration/requirements-kserve.txt
	bash scripts/setup.sh
	touch $@
$(ROOT)/deps/ort/lib/libonnxruntime.so.1:
	bash scripts/fetch-ort.sh $(ROOT)/deps/ort

# ---- objects
Q := $(if $(V),,@)
$(B)/obj/%.o: %.c | $(ORT_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC  $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(B)/obj/%.o: %.cc
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CXX $<")
	$(Q)$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@
$(B)/libonnxd.a: $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^
$(B)/onnxd: $(B)/obj/src/main.o $(B)/libonnxd.a
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CXX) $(LDHARD) -o $@ $^ $(LDLIBS)
$(B)/tests/%: tests/unit/%.c tests/unit/test.h $(B)/libonnxd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) $(LDHARD) -o $@ $< $(B)/libonnxd.a $(LDLIBS)
# libpq is dlopen'ed by onnxd (features/l3_pg_lib.h); this test also talks to PostgreSQL itself
$(B)/tests/l3_pg_test: LDLIBS += -lpq
# image/ on one file from the command line (tests/integration/test_image_exact.py)
$(B)/tests/onnxd-imgtool: tests/image/imgtool.c $(B)/libonnxd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDHARD) -o $@ $< $(B)/libonnxd.a $(LDLIBS)
# fuzz harnesses, built with a plain driver that replays the committed corpus
$(B)/fuzz-replay/%: tests/fuzz/%.c tests/fuzz/replay_main.c $(B)/libonnxd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDHARD) -o $@ $< tests/fuzz/replay_main.c $(B)/libonnxd.a $(LDLIBS)

# benchmark tools: load generator (bench/loadgen*.c) and in-process ONNX Runtime ceiling
$(B)/onnxd-bench: $(wildcard bench/loadgen*.c bench/loadgen*.h) $(B)/libonnxd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(CPPFLAGS) -Ibench $(CFLAGS) $(LDHARD) -o $@ $(filter %.c,$^) $(B)/libonnxd.a $(LDLIBS)
$(B)/onnxd-ort-limit: $(wildcard bench/ort_limit*.c) bench/loadgen_hist.h bench/timed_run.h $(B)/libonnxd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(CPPFLAGS) -Ibench $(CFLAGS) $(LDHARD) -o $@ $(filter %.c,$^) $(B)/libonnxd.a $(LDLIBS)
# S5's ceiling: JPEG decode + preprocessing (src/image) + Run + top 5, in-process
$(B)/onnxd-img-limit: bench/img_limit.c bench/loadgen_hist.h bench/timed_run.h $(B)/libonnxd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(CPPFLAGS) -Ibench $(CFLAGS) $(LDHARD) -o $@ $(filter %.c,$^) $(B)/libonnxd.a $(LDLIBS)
# in-process feature-store tiers (L1 map, Bloom, L2 LMDB, velocity): latency percentiles
$(B)/onnxd-feature-bench: $(wildcard bench/feature_bench*.c) bench/loadgen_hist.h $(B)/libonnxd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(CPPFLAGS) -Ibench $(CFLAGS) $(LDHARD) -o $@ $(filter %.c,$^) $(B)/libonnxd.a $(LDLIBS)
# gRPC load generator (bench/grpc_loadgen*.c): nghttp2's client API (nghttp2 is in every link)
$(B)/onnxd-grpc-bench: $(wildcard bench/grpc_loadgen*.c bench/grpc_loadgen*.h) bench/loadgen_hist.h $(B)/libonnxd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(CPPFLAGS) -Ibench $(CFLAGS) $(LDHARD) -o $@ $(filter %.c,$^) $(B)/libonnxd.a $(LDLIBS)

# ---- models (generated, git-ignored)
models: .stamp-setup
	$(PY) tools/make_models.py --out models
	$(PY) tools/fraud/train.py --out models
	@cmp -s tools/fraud/config.json models/fraud/config.json || \
	  cp tools/fraud/config.json models/fraud/config.json

# run, test and bench build in a sub-make: on a fresh machine, flags that come from packages the
# set-up installs (pkg-config libpq, ONNX Runtime) are only known after it has run.
run: .stamp-setup
	@$(MAKE) --no-print-directory build/onnxd models
	build/onnxd --model-repository models --host 127.0.0.1 --http-port 8000

# ---- tests: last line of output is `N passed, N failed`
test: .stamp-setup
	@$(MAKE) --no-print-directory all SANITIZE=$(SANITIZE)
	@ONNXD_BUILD=$(B) bash scripts/run-tests.sh

bench: .stamp-setup
	@$(MAKE) --no-print-directory all models
	$(PY) bench/run.py $(if $(QUICK),--quick)

# soak (not in `make test`): 30 minutes of mixed traffic, Redis restarted and paused midway;
# fails on memory growth or a failed good request. MINUTES=N for another length.
soak: .stamp-setup
	@$(MAKE) --no-print-directory all models
	$(PY) tests/soak/run_soak.py $(if $(MINUTES),--minutes $(MINUTES))

# libFuzzer builds (clang) for finding new inputs: make fuzz FUZZER=fuzz_http SECONDS=60
fuzz: $(LIB_C)
	bash scripts/fuzz.sh $(FUZZER) $(SECONDS)

# clang-format comes from scripts/setup.sh (Debian package clang-format); CI runs format-check first
format: .stamp-setup
	clang-format -i $$(find src tests bench -name '*.[ch]')
format-check: .stamp-setup
	@clang-format --dry-run -Werror $$(find src tests bench -name '*.[ch]') && \
	  echo "format-check: OK"

# ---- release artifacts: `make dist` (tarball: scripts/dist.sh), `make image` (OCI image:
# Containerfile, scripts/image.sh). The tarball's onnxd is the release objects linked again:
# LMDB, hiredis, nghttp2, libturbojpeg, libspng and zlib static (Debian ships their .a but libspng's, built
# by scripts/build-spng-static.sh; minimal Debian 12 lacks libnghttp2-14), the other libraries shared and bundled in
# lib/, found through an old-style DT_RPATH of $ORIGIN/../lib (--disable-new-dtags: unlike a
# RUNPATH, an RPATH also serves the libraries' own dependencies, e.g. libpq's libssl.so.3).
.PHONY: dist image
OX_VERSION  := $(shell grep -o 'OX_VERSION "[^"]*"' src/server/server.h | cut -d'"' -f2)
DIST_NAME   := onnxd-$(OX_VERSION)-linux-$(shell uname -m)
DIST_TGZ    := dist/$(DIST_NAME).tar.gz
# libpq: onnxd dlopens it (features/l3_pg_lib.h), so the linker would drop an unreferenced -lpq;
# --no-as-needed keeps it NEEDED here, so that dist.sh and image.sh bundle it and its libraries.
DIST_LDLIBS := $(filter-out -Wl$(comma)-rpath$(comma)%,$(ORT_LIBS)) -Wl,--disable-new-dtags \
               -Wl,-rpath,'$$ORIGIN/../lib' -l:liblmdb.a -l:libhiredis.a -l:libnghttp2.a \
               -l:libturbojpeg.a build/spng-static/libspng.a -l:libz.a \
               -Wl,--no-as-needed -lpq -Wl,--as-needed -lpthread -lm
# libspng static: Debian ships no libspng.a; scripts/build-spng-static.sh builds one from Debian's
# source package of the installed version (libturbojpeg.a and libz.a come with the -dev packages)
build/spng-static/libspng.a: scripts/build-spng-static.sh
	bash scripts/build-spng-static.sh $@
dist: .stamp-setup
	@$(MAKE) --no-print-directory SANITIZE= $(DIST_TGZ)
	@echo "dist: $(DIST_TGZ): $$(du -h $(DIST_TGZ) | cut -f1) ($$(stat -c %s $(DIST_TGZ)) bytes)"
image: .stamp-setup
	@$(MAKE) --no-print-directory SANITIZE= $(DIST_TGZ)
	bash scripts/image.sh $(DIST_TGZ) onnxd:$(OX_VERSION)
build/onnxd-dist: build/obj/src/main.o build/libonnxd.a build/spng-static/libspng.a
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CXX) $(LDHARD) -o $@ $(filter-out %/libspng.a,$^) $(DIST_LDLIBS)
$(DIST_TGZ): build/onnxd-dist scripts/dist.sh deploy/systemd/onnxd.service \
             deploy/tarball/README.md models/mlp16/1/model.onnx $(ORT_LIB_FILE)
	bash scripts/dist.sh build/onnxd-dist $(ORT_LIB_FILE) $@
models/mlp16/1/model.onnx:
	$(PY) tools/make_models.py --out models

# ---- the single file (issue 13): one executable that carries ONNX Runtime inside it.
# $(B)/onnxd-single links the objects of $(B)/onnxd with runtime/ort_embed.o in place of
# runtime/ort_linked.o, plus ort_blob.o (libonnxruntime.so.1's bytes and their SHA-256; see
# src/runtime/ort_embed.c), and LMDB, hiredis, nghttp2, libturbojpeg, zlib from Debian's static archives
# (libspng from scripts/build-spng-static.sh). libpq is loaded
# at run time for --postgres, as in every build. The recipe refuses a result that needs any
# shared library beyond glibc, libstdc++ and libgcc_s, or has an rpath. Release builds only
# (no SANITIZE variant: ONNX Runtime and the static archives are not instrumented anyway).
# `make single` (and `make dist`) copies it to dist/onnxd-<version>-linux-<arch>.
ORT_SO      := $(ROOT)/deps/ort/lib/libonnxruntime.so.1
SINGLE_DIST := dist/$(DIST_NAME)
SINGLE_NEEDED_OK := ^(lib(c|m|dl|rt|pthread|stdc\+\+|gcc_s)\.so\.[0-9]+|ld-linux[-a-z0-9_.]*\.so\.[0-9]+)$$
SINGLE_OBJ  := $(B)/obj/src/main.o $(filter-out %/ort_linked.o,$(LIB_OBJ)) \
               $(B)/obj/src/runtime/ort_embed.o $(B)/obj/ort_blob.o
.PHONY: single
dist: single
ifeq ($(SANITIZE),)
all: $(B)/onnxd-single
endif
# readelf's NEEDED entries of $(1) that are not in SINGLE_NEEDED_OK (empty when all are).
single_bad_needed = $$(readelf -d $(1) | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -Ev '$(SINGLE_NEEDED_OK)')
$(B)/obj/ort_blob.o: src/runtime/ort_blob.S $(ORT_SO)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AS  $< ($(ORT_SO))")
	$(Q)bad=$(call single_bad_needed,$(ORT_SO)); [ -z "$$bad" ] || \
	  { echo "$(ORT_SO) needs $$bad: cannot be carried in the single file" >&2; exit 1; }
	$(Q)sum=$$(sha256sum $(ORT_SO) | cut -c1-64) && \
	  $(CC) -c -DOX_ORT_BLOB='"$(ORT_SO)"' -DOX_ORT_BLOB_SHA256="\"$$sum\"" $< -o $@
$(B)/onnxd-single: $(SINGLE_OBJ) build/spng-static/libspng.a
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CXX) $(LDHARD) -o $@.tmp $(SINGLE_OBJ) -Wl,-Bstatic -llmdb -lhiredis -lnghttp2 -lturbojpeg \
	  build/spng-static/libspng.a -lz -Wl,-Bdynamic -ldl -lpthread -lm
	$(Q)bad=$(call single_bad_needed,$@.tmp); [ -z "$$bad" ] || \
	  { echo "$@ needs $$bad (only glibc, libstdc++, libgcc_s allowed)" >&2; exit 1; }
	$(Q)! readelf -d $@.tmp | grep -Eq '\((RPATH|RUNPATH)\)' || { echo "$@ has an rpath" >&2; exit 1; }
	$(Q)mv $@.tmp $@
single: .stamp-setup
	@$(MAKE) --no-print-directory SANITIZE= build/onnxd-single
	@mkdir -p dist
	cp build/onnxd-single $(SINGLE_DIST)
	@echo "$(SINGLE_DIST): $$(stat -c %s $(SINGLE_DIST)) bytes"

# lower modules never include higher ones (order in scripts/check-layers.sh and docs/design.md)
check-layers:
	@bash scripts/check-layers.sh

clean:
	rm -rf build dist

-include $(shell find build -name '*.d' 2>/dev/null)

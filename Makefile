# ingest-bridge build. `make` builds build/ingest-bridge; see README.md.
#
#   make check           the everyday command, under a minute: the build with -Werror, the
#                        unit tests, the include rules (tests/includes.sh), format-check
#   make                 build/ingest-bridge (and build/libbridge.a)
#   make deps            install missing Debian packages (apt-get; sudo if not root)
#   make run             deps + build + a local RabbitMQ node if none answers + run bridge.ini
#   make test            the full run (about 12 minutes): unit + integration tests, again under ASan+UBSan, under valgrind,
#                        then the fault suites, the cluster test and a fuzz smoke run
#   make test-unit       cmocka unit tests (tests/unit/test_*.c)
#   make test-integration  the real binary against a private RabbitMQ node
#   make test-valgrind   the integration suite with the bridge under valgrind memcheck
#   make test-faults     broker faults and hostile input (tests/faults/)
#   make test-cluster    two bridges on a three-node RabbitMQ cluster, nodes killed
#   make reliability     test-faults, then its measurements into tests/faults/RESULTS.md
#   make fuzz            every libFuzzer target for FUZZ_SECONDS (60)
#   make bench           the bridge against its limits (broker ceiling, nginx), one table
#   make bench-plot      req/s, p99 and errors against concurrency, as PNG plots
#   make bench-profile   instructions per request (callgrind) on pong, fire and rpc
#   make bench-readme    the latest table and plots into tests/bench/RESULTS.md
#   make format-check    clang-format --dry-run -Werror on our sources
#   make lint            yamllint, shellcheck, the man page, the alerting rules and the
#                        dashboard's metric names (tests/lint.sh)
#   make test-docker     docker/ checked without an engine (tests/docker/check.sh), then
#                        the image built and the compose stack run (tests/docker/engine.sh)
#   make install         PREFIX (/usr/local), DESTDIR; make uninstall
#   make test-install    make install into a temporary DESTDIR, checked
#   make clean
# Knobs: WERROR=1 (CI), SANITIZER=address,undefined (builds into build/san, pools off).

CC      ?= cc
PKGS    := libevent libevent_openssl librabbitmq libxml-2.0 inih openssl zlib
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wundef
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE $(WARN) -I. \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread
ifdef WERROR
CFLAGS  += -Werror
endif
# The sanitizer build frees request and connection contexts instead of
# pooling them (BRIDGE_NO_POOLS, http/server.c): a stale pointer to one is
# then a use after free ASan reports, not a silent use of a recycled one.
ifdef SANITIZER
CFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all \
           -DBRIDGE_NO_POOLS
LDFLAGS += -fsanitize=$(SANITIZER)
BUILD   ?= build/san
else
BUILD   ?= build
endif

SRC     := $(wildcard bridge/*.c bridge/base/*.c http/*.c amqp/*.c)
OBJ     := $(SRC:%.c=$(BUILD)/obj/%.o)
LIBOBJ  := $(filter-out $(BUILD)/obj/bridge/main.o,$(OBJ))
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/%,$(wildcard tests/unit/test_*.c))
ITEST   := $(patsubst tests/integration/%.c,$(BUILD)/integration/%,\
             $(wildcard tests/integration/test_*.c))
# The fault suites in name order (the broker's, then hostile input's): the
# order of their rows in the Reliability table.
FTEST   := $(patsubst tests/faults/%.c,$(BUILD)/faults/%,$(sort $(wildcard tests/faults/test_*.c)))
CTEST   := $(patsubst tests/cluster/%.c,$(BUILD)/cluster/%,$(wildcard tests/cluster/test_*.c))

# What `make deps` installs when missing: build tools, the libraries above,
# the test framework, the broker the tests and `make run` start, wrk for
# tests/load, clang-format for format-check; OpenSSL's headers (HTTPS,
# amqps, token digests) and its command line tool (the tests make their
# certificates with it); yamllint, shellcheck and groff for make lint,
# python3-yaml for the compose file's check, man-db for test-install to find
# and render the installed man page, prometheus for make lint's promtool.
DEPS    := gcc make pkg-config libevent-dev librabbitmq-dev libxml2-dev zlib1g-dev \
           libcmocka-dev libinih-dev rabbitmq-server wrk clang-format valgrind \
           clang libclang-rt-dev libssl-dev openssl yamllint shellcheck \
           groff-base python3-yaml man-db prometheus

# Sources clang-format checks: ours, not generated ones.
FMT_SRC := $(wildcard bridge/*.[ch] bridge/base/*.[ch] http/*.[ch] amqp/*.[ch] amqp/echo/*.[ch] tests/faults/*.[ch] \
             tests/bench/*.[ch] tests/cluster/*.[ch] \
             tests/unit/*.[ch] tests/integration/*.[ch] tests/lib/*.[ch] tests/fuzz/*.[ch])

.PHONY: all check clean deps run test test-unit test-integration test-valgrind test-faults \
        test-cluster reliability fuzz unit format-check format bench bench-plot bench-deps \
        bench-profile bench-readme lint test-docker install uninstall test-install
all: $(BUILD)/ingest-bridge $(BUILD)/echo-worker

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libbridge.a: $(LIBOBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/ingest-bridge: $(BUILD)/obj/bridge/main.o $(BUILD)/libbridge.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/libbridge.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs cmocka)

# Integration tests drive the binary over sockets and read the broker with
# rabbitmq-c: they link neither libbridge.a nor libevent. The harness itself is
# built without sanitizers: what is under test is the bridge it starts (built
# with them), and libcmocka 1.1.5 leaks a message buffer of its own at exit.
HARNESS_CFLAGS := $(filter-out -fsanitize=% -fno-sanitize-recover=%,$(CFLAGS))

# The example rpc worker (tests, benchmarks, docker): standalone, links
# librabbitmq only, not part of libbridge.a; like the harness, not the
# subject of the sanitizer run.
$(BUILD)/echo-worker: amqp/echo/echo-worker.c
	@mkdir -p $(dir $@)
	$(CC) $(HARNESS_CFLAGS) -o $@ $< $(shell pkg-config --libs librabbitmq)
# The broker's own limit for `make bench`: a rabbitmq-c publisher (and rpc
# client) with no HTTP in between. A program of the benchmark, not the bridge.
$(BUILD)/bench-ceiling: tests/bench/ceiling.c
	@mkdir -p $(dir $@)
	$(CC) $(HARNESS_CFLAGS) -o $@ $< $(shell pkg-config --libs librabbitmq) -lpthread
# A stand-in for the bridge and wrk's CPU beside the direct client.
$(BUILD)/bench-burn: tests/bench/burn.c
	@mkdir -p $(dir $@)
	$(CC) $(HARNESS_CFLAGS) -o $@ $< -lpthread
# The xml check's cost per kind of hostile 1 MiB document (the bench's xml
# row, the man page's XML LIMITS): bridge/xmlcheck.c linked in.
$(BUILD)/bench-xmlcost: tests/bench/xmlcost.c $(BUILD)/libbridge.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Each suite links the shared harness (tests/lib/harness.c), compiled in,
# and the fault suites their family's shared part: test_broker_*.c
# tests/faults/broker_faults.c, test_hostile_*.c tests/faults/hostile.c.
HARNESS := tests/lib/harness.c tests/lib/harness.h tests/lib/harness_cmocka.h
define link_suite
	@mkdir -p $(dir $@)
	$(CC) $(HARNESS_CFLAGS) -Itests/lib -o $@ $< tests/lib/harness.c $(1) \
	    $(shell pkg-config --libs librabbitmq cmocka openssl zlib) -lpthread
endef
$(BUILD)/integration/test_%: tests/integration/test_%.c $(HARNESS)
	$(call link_suite)
$(BUILD)/faults/test_broker_%: tests/faults/test_broker_%.c $(HARNESS) \
                               tests/faults/broker_faults.c tests/faults/broker_faults.h
	$(call link_suite,tests/faults/broker_faults.c)
$(BUILD)/faults/test_hostile_%: tests/faults/test_hostile_%.c $(HARNESS) \
                                tests/faults/hostile.c tests/faults/hostile.h
	$(call link_suite,tests/faults/hostile.c)
$(BUILD)/cluster/test_%: tests/cluster/test_%.c $(HARNESS)
	$(call link_suite)

deps:
	@missing=; \
	for p in $(DEPS); do \
	    dpkg -s $$p 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: everything is installed"; exit 0; fi; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	echo "deps: installing$$missing"; \
	$$sudo apt-get update && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing

# The broker URI comes from BRIDGE_AMQP_URI (as the bridge reads it), else
# 127.0.0.1:5672 as in bridge.ini. A local node started here keeps running
# after the bridge exits (stop it with
# `BROKER_DIR=build/rabbitmq tests/broker.sh stop`, or `make clean`).
run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	@hp=$$(tests/broker.sh uri-hostport "$${BRIDGE_AMQP_URI:-amqp://127.0.0.1:5672}"); \
	if tests/broker.sh answers "$$hp"; then \
	    echo "run: a broker answers on $$hp"; \
	else \
	    case "$${hp%:*}" in \
	    127.*|localhost|::1) \
	        BROKER_DIR=build/rabbitmq BROKER_NODE=ingest-bridge-run@localhost \
	            BROKER_PORT="$${hp##*:}" tests/broker.sh start || exit 1 ;; \
	    *) echo "run: nothing answers on $$hp and it is not local; the bridge will retry" ;; \
	    esac; \
	fi; \
	echo "run: $(BUILD)/ingest-bridge -c bridge.ini"; \
	exec $(BUILD)/ingest-bridge -c bridge.ini

test-unit: $(UNIT)
	@set -e; for t in $(UNIT); do echo "== $$t"; $$t; done
	@echo "test-unit: $(words $(UNIT)) programs passed ($(BUILD))"

unit: test-unit

# The fast loop: warnings as errors (the build and the unit tests, two jobs
# at a time), the unit tests, then the include rules and the format check,
# both run even when the first fails, either failing the target.
check:
	@$(MAKE) --no-print-directory -j2 WERROR=1 all $(UNIT)
	@$(MAKE) --no-print-directory WERROR=1 test-unit
	@rc=0; PKGS="$(PKGS)" CC="$(CC)" tests/includes.sh || rc=1; \
	$(MAKE) --no-print-directory format-check || rc=1; \
	exit $$rc

# One private broker node for the whole run, stopped even on failure.
test-integration: $(BUILD)/ingest-bridge $(BUILD)/echo-worker $(ITEST)
	tests/integration/run.sh $(BUILD) $(ITEST)

# Faults and hostile input against the real binary (tests/faults/), on their
# own private node; every measured outcome lands in $(BUILD)/reliability.md,
# which `make reliability` puts into tests/faults/RESULTS.md.
# Each run gets a node of its own (its directory named after the shell's
# pid), so two runs side by side never stop each other's broker.
test-faults: $(BUILD)/ingest-bridge $(BUILD)/echo-worker $(FTEST)
	@rm -f $(BUILD)/reliability.md
	@d=$(CURDIR)/$(BUILD)/faults-broker.$$$$; \
	IT_RESULTS=$(CURDIR)/$(BUILD)/reliability.md IT_BROKER_DIR=$$d \
	    tests/integration/run.sh $(BUILD) $(FTEST); rc=$$?; rm -rf $$d; exit $$rc

# Two bridges on a private three-node cluster (tests/cluster.sh) with a
# quorum queue, under load, two nodes killed in turn; its figures land in
# $(BUILD)/cluster-results.txt. Two to three minutes on two cores.
test-cluster: $(BUILD)/ingest-bridge $(BUILD)/echo-worker $(CTEST)
	IT_RESULTS=$(CURDIR)/$(BUILD)/cluster-results.txt tests/cluster/run.sh $(BUILD) $(CTEST)

# libFuzzer targets (tests/fuzz/fuzz_*.c), each for FUZZ_SECONDS on a copy of
# its seed corpus (tests/fuzz/corpus/<target>): a crash, leak, broken
# invariant or timeout fails and names the input that did it. Always clang
# with ASan+UBSan, whatever CC and SANITIZER say; builds into build/fuzz.
FUZZ_SECONDS ?= 60
fuzz:
	WERROR=$(WERROR) tests/fuzz/run.sh build/fuzz $(FUZZ_SECONDS)

# The fault suites and the functional suite (whose rpc tests measure the
# crossed-reply and bad-reply defences), then what they measured into the
# table of tests/faults/RESULTS.md (tests/faults/results.sh): the table is
# never written by hand.
reliability: test-faults $(ITEST)
	IT_RESULTS=$(CURDIR)/$(BUILD)/reliability.md tests/integration/run.sh $(BUILD) \
	    $(BUILD)/integration/test_bridge
	tests/faults/results.sh $(BUILD)/reliability.md tests/faults/RESULTS.md README.md

# The integration suite with the bridge (not the harness) under valgrind
# memcheck: the normal build, as sanitizers and valgrind do not mix. An error
# or a definite leak makes the bridge exit 99, which the tests check, and the
# harness prints valgrind's report. The tests' bounds on how fast the bridge
# starts, stops and answers stretch by IT_TIME_SCALE (measured under
# valgrind: start-up 1.1 s instead of 0.05 s, answers a few ms, so 5 leaves a
# wide margin on a slow CI machine and only lengthens a failing run). No
# suppressions: the bridge frees everything at exit, libevent, rabbitmq-c and
# libxml2 included.
VALGRIND := valgrind --quiet --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite --show-leak-kinds=definite \
            --track-origins=yes --num-callers=30
VALGRIND_TIME_SCALE ?= 5
test-valgrind: $(BUILD)/ingest-bridge $(BUILD)/echo-worker $(ITEST)
ifdef SANITIZER
	$(error test-valgrind runs the build without SANITIZER)
endif
	@command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind"; exit 1; }
	IT_BRIDGE_WRAP="$(VALGRIND)" IT_TIME_SCALE=$(VALGRIND_TIME_SCALE) \
	    tests/integration/run.sh $(BUILD) $(ITEST)

# The suite, then the same suite built with ASan+UBSan into build/san, the
# integration suite with the bridge under valgrind, the fault suites, the
# cluster test, every fuzzer for FUZZ_SECONDS, then lint, test-docker and
# test-install.
test: test-unit test-integration
ifndef SANITIZER
	@echo "== test: again with SANITIZER=address,undefined"
	@$(MAKE) --no-print-directory SANITIZER=address,undefined BUILD=$(BUILD)/san \
	    test-unit test-integration
	@echo "== test: the integration suite under valgrind"
	@$(MAKE) --no-print-directory test-valgrind
	@echo "== test: broker faults and hostile input"
	@$(MAKE) --no-print-directory test-faults
	@echo "== test: two bridges on a three-node cluster, nodes killed"
	@$(MAKE) --no-print-directory test-cluster
	@echo "== test: fuzz smoke run, $(FUZZ_SECONDS) s a target"
	@$(MAKE) --no-print-directory fuzz
	@echo "== test: lint, docker/ without an engine and with one, make install"
	@$(MAKE) --no-print-directory lint test-docker test-install
endif

# Benchmarks (tests/bench/run.sh): the release build against a private
# broker node, nginx (one worker) and the direct-publish ceiling, each
# workload for BENCH_SECONDS (10); `bench-plot` sweeps concurrency for
# BENCH_PLOT_SECONDS (5) a point. Never part of `make test`: figures, not
# pass/fail. They install what they need beyond `make deps`.
BENCH_DEPS := nginx-light gnuplot-nox curl
bench-deps: deps
	@$(MAKE) --no-print-directory deps DEPS="$(BENCH_DEPS)"

bench: bench-deps
	@$(MAKE) --no-print-directory $(BUILD)/ingest-bridge $(BUILD)/echo-worker $(BUILD)/bench-ceiling \
	    $(BUILD)/bench-xmlcost $(BUILD)/bench-burn
	tests/bench/run.sh $(BUILD) table

bench-plot: bench-deps
	@$(MAKE) --no-print-directory $(BUILD)/ingest-bridge $(BUILD)/echo-worker $(BUILD)/bench-ceiling
	tests/bench/run.sh $(BUILD) plot

# The latest bench table and plots into tests/bench/RESULTS.md and
# tests/bench/plots/.
bench-readme:
	tests/bench/run.sh $(BUILD) results

# Instructions per request on the pong, fire and rpc paths (callgrind).
bench-profile: bench-deps
	@$(MAKE) --no-print-directory $(BUILD)/ingest-bridge $(BUILD)/echo-worker
	tests/bench/profile.sh $(BUILD)

# Install layout (GNU names). With PREFIX=/usr the config goes to /etc.
# An existing config is kept: it is the operator's.
PREFIX     ?= /usr/local
bindir     ?= $(PREFIX)/bin
sysconfdir ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
mandir     ?= $(PREFIX)/share/man
unitdir    ?= $(PREFIX)/lib/systemd/system
CONFDIR    := $(DESTDIR)$(sysconfdir)/ingest-bridge
install: $(BUILD)/ingest-bridge $(BUILD)/echo-worker
	install -d $(DESTDIR)$(bindir) $(CONFDIR) $(DESTDIR)$(mandir)/man8 $(DESTDIR)$(unitdir)
	install -m 755 $(BUILD)/ingest-bridge $(DESTDIR)$(bindir)/ingest-bridge
	install -m 755 $(BUILD)/echo-worker $(DESTDIR)$(bindir)/ingest-bridge-echo-worker
	install -m 644 bridge/ingest-bridge.8 $(DESTDIR)$(mandir)/man8/ingest-bridge.8
	sed -e 's|@BINDIR@|$(bindir)|g' -e 's|@SYSCONFDIR@|$(sysconfdir)|g' \
	    bridge/ingest-bridge.service.in >$(DESTDIR)$(unitdir)/ingest-bridge.service.tmp
	chmod 644 $(DESTDIR)$(unitdir)/ingest-bridge.service.tmp
	mv -f $(DESTDIR)$(unitdir)/ingest-bridge.service.tmp $(DESTDIR)$(unitdir)/ingest-bridge.service
	install -m 644 bridge/ingest-bridge.socket.in $(DESTDIR)$(unitdir)/ingest-bridge.socket
	@if [ -e $(CONFDIR)/bridge.ini ]; then \
	    echo "install: keeping $(CONFDIR)/bridge.ini (the shipped one is bridge.ini in the source)"; \
	else \
	    echo "install -m 644 bridge.ini $(CONFDIR)/bridge.ini"; \
	    install -m 644 bridge.ini $(CONFDIR)/bridge.ini; \
	fi

# Everything install wrote but the config, which may hold the operator's edits.
uninstall:
	rm -f $(DESTDIR)$(bindir)/ingest-bridge $(DESTDIR)$(bindir)/ingest-bridge-echo-worker \
	    $(DESTDIR)$(mandir)/man8/ingest-bridge.8 $(DESTDIR)$(unitdir)/ingest-bridge.service \
	    $(DESTDIR)$(unitdir)/ingest-bridge.socket
	@echo "uninstall: kept $(CONFDIR) (remove it by hand)"

# The files no compiler reads, docker/ without an engine and with one, make
# install into a temporary directory.
lint:
	tests/lint.sh
# test-docker's engine part installs its own: the Docker engine and
# Compose 1.29 (Debian's), debootstrap for the base image where no registry
# is reachable, curl to ask the stack.
DOCKER_DEPS := docker.io docker-compose debootstrap curl
test-docker: $(BUILD)/ingest-bridge $(BUILD)/echo-worker
	tests/docker/check.sh $(BUILD)
	@$(MAKE) --no-print-directory deps DEPS="$(DOCKER_DEPS)"
	tests/docker/engine.sh $(BUILD)
test-install: $(BUILD)/ingest-bridge $(BUILD)/echo-worker
	tests/install/check.sh $(BUILD)

format-check:
	@command -v clang-format >/dev/null || { echo "clang-format missing: make deps"; exit 1; }
	clang-format --dry-run -Werror $(FMT_SRC)

format:
	clang-format -i $(FMT_SRC)

# Stop any broker node a run or test left under build/ before deleting its data.
clean:
	@for f in $$(find build -name node.env 2>/dev/null); do \
	    BROKER_DIR=$$(dirname $$f) tests/broker.sh stop || true; \
	done
	rm -rf build

-include $(OBJ:.o=.d)

# dmsgd — build, run, test and install.

GO        ?= go
PREFIX    ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR   ?= /lib/systemd/system
DESTDIR   ?=
# The systemd version the units are installed for: below 253 the
# notify.conf drop-in is installed too (see deploy/systemd). Empty skips it.
SYSTEMD_VERSION ?= $(shell systemctl --version 2>/dev/null | awk 'NR==1 {print $$2}')
FUZZTIME  ?= 30s

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

BIN := bin/dmsgd

.PHONY: all build run test attack bench bench-circuits lint vet fmt-check install fuzz clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/dmsgd

# Run a development router in the foreground (Ctrl-C stops it).
run: build
	mkdir -p run
	./$(BIN) serve --config configs/dev.yaml

test: vet fmt-check
	$(GO) test -race -count=1 -timeout 20m ./...

# The hostile-peer suite of e2e/attack_*_test.go at full scale: every attack
# at its real size against default limits, with a table of figures at the
# end (`make test` runs the same attacks small). Long: up to an hour.
attack:
	DMSGD_ATTACK_SCALE=full $(GO) test -count=1 -timeout 90m -run '^TestAttack' -v ./e2e/

# Benchmarks: BENCH selects them (a go test -bench pattern), BENCHPKGS the
# packages, BENCHCOUNT the runs of each. bench-circuits runs only the
# circuit benchmarks, CIRCUIT_BENCHCOUNT times each (compare medians):
# dmsgd against an ideal relay chain in the same run, every router, relay
# and endpoint a process of its own (README names their knobs,
# DMSGD_BENCH_BINARY and DMSGD_BENCH_LEGACY).
BENCH      ?= .
BENCHPKGS  ?= ./...
BENCHCOUNT ?= 1
CIRCUIT_BENCHCOUNT ?= 3

bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(BENCHCOUNT) $(BENCHPKGS)

bench-circuits:
	$(GO) test -run '^$$' -bench '^BenchmarkCircuit(Throughput|Latency)$$' -count $(CIRCUIT_BENCHCOUNT) -timeout 60m ./internal/circ

# staticcheck runs from the module proxy at a pinned version; it is not a
# dependency of dmsgd.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: vet fmt-check
	$(GO) run $(STATICCHECK) ./...

vet:
	$(GO) vet ./...

# Fails listing the files gofmt would change.
fmt-check:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt needed on:"; echo "$$unformatted"; exit 1; \
	fi

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/dmsgd
	install -d $(DESTDIR)$(SYSCONFDIR)/dmsgd
	test -e $(DESTDIR)$(SYSCONFDIR)/dmsgd/dmsgd.yaml || \
		install -m 0644 configs/dmsgd.yaml $(DESTDIR)$(SYSCONFDIR)/dmsgd/dmsgd.yaml
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/dmsgd|$(PREFIX)/bin/dmsgd|' -e 's|/etc/dmsgd/|$(SYSCONFDIR)/dmsgd/|' \
		deploy/systemd/dmsgd.service > $(DESTDIR)$(UNITDIR)/dmsgd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/dmsgd.service
	install -m 0644 deploy/systemd/dmsgd.socket $(DESTDIR)$(UNITDIR)/dmsgd.socket
	@if [ -n "$(SYSTEMD_VERSION)" ] && [ "$(SYSTEMD_VERSION)" -lt 253 ]; then \
		echo "systemd $(SYSTEMD_VERSION) predates Type=notify-reload: installing the notify.conf drop-in"; \
		install -d $(DESTDIR)$(UNITDIR)/dmsgd.service.d; \
		install -m 0644 deploy/systemd/dmsgd.service.d/notify.conf $(DESTDIR)$(UNITDIR)/dmsgd.service.d/notify.conf; \
	fi

# Short fuzz runs of the frame decoder, signed advertisements, the link state
# machine, circuit relaying and the span engine's budget bookkeeping.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/dmsg
	$(GO) test -run '^$$' -fuzz '^FuzzFrame$$' -fuzztime $(FUZZTIME) ./internal/dmsg
	$(GO) test -run '^$$' -fuzz '^FuzzSignedSpan$$' -fuzztime $(FUZZTIME) ./internal/dmsg
	$(GO) test -run '^$$' -fuzz '^FuzzLink$$' -fuzztime $(FUZZTIME) ./internal/iocom
	$(GO) test -run '^$$' -fuzz '^FuzzCircuit$$' -fuzztime $(FUZZTIME) ./internal/circ
	$(GO) test -run '^$$' -fuzz '^FuzzBudget$$' -fuzztime $(FUZZTIME) ./internal/span

clean:
	rm -rf bin run
	$(GO) clean -testcache

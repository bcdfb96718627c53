# chpox: checkpoint/restore for Linux processes.
#   make demo   build and show start, checkpoint, kill, restore, goes on
#   make test   everything CI runs (as root)
#   make bench  dump/restore throughput against this machine's limits
#   make servers  real programs (redis, nginx, node, postgres) with clients connected

GO    ?= go
BIN   := bin/chpox
# A count, not a duration: a duration makes go1.26's fuzz coordinator fail now
# and then with a bare "context deadline exceeded" at its end (golang/go#75804).
FUZZTIME ?= 100000x

.PHONY: all build setup test lint unit e2e servers slurm fuzz fuzz-long bench stress faults demo man clean

all: build

# What a fresh machine of this kind may lack (Debian packages, only those
# missing): gcc for the test programs; python3, redis, nginx, node and
# postgresql, the real programs the e2e tests checkpoint; nft sets the network lock of TCP
# connections. Go comes with the machine.
setup:
	@./scripts/setup.sh
	$(GO) mod download

# The version --version prints and images record.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo unknown)

build:
	$(GO) build -ldflags "-X main.buildVersion=$(VERSION)" -o $(BIN) ./cmd/chpox

test: setup lint unit e2e fuzz

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./pkg/... ./cmd/... ./internal/...

e2e:
	$(GO) test -race -count=1 -timeout 10m ./e2e

# Only the real programs (part of e2e): redis (100k keys, 50 clients), nginx
# (master, 2 workers, keep-alive), node's http server and PostgreSQL (a psql
# session in a transaction) through dump --kill and restore, node under
# chpox run, and io_uring refused.
servers: setup
	$(GO) test -race -count=1 -v -run '^Test(Server|IOUring)' -timeout 15m ./e2e

# The Slurm recipe of docs/slurm.md on a single-node Slurm of its own (part
# of e2e): checkpoint on USR2, requeue, restore, same result.
slurm: setup
	$(GO) test -race -count=1 -v -run '^TestSlurm' -timeout 5m ./e2e

# Every fuzz target of the image reader, briefly; longer: make fuzz FUZZTIME=5000000x
fuzz:
	for f in $$($(GO) test -list '^Fuzz' ./pkg/format | grep ^Fuzz); do \
		$(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=200x ./pkg/format || exit 1; \
	done

# The long run outside CI: at least 10^7 executions of every fuzz target.
fuzz-long:
	$(MAKE) fuzz FUZZTIME=10000000x

# Checkpoint/restore of the Go and the pthread program, 50 times each.
stress: setup
	CHPOX_STRESS=50 $(GO) test -count=1 -v -run '^TestStressThreads$$' -timeout 40m ./e2e

# chpox dump, restore and run SIGKILLed at random instants against a job that
# checks its own state (issue 8); prints the table of harmed jobs and lost
# images. `make test` runs a short version (TestFaults' defaults).
faults: setup
	CHPOX_FAULTS_DUMPS=1000 CHPOX_FAULTS_RESTORES=200 CHPOX_FAULTS_RUNS=200 \
		$(GO) test -count=1 -v -run '^TestFaults$$' -timeout 60m ./e2e

# Live dumps and chpox run's checkpoints at 1 and 4 GiB (CHPOX_BENCH_LIVE_MIB).
bench: setup
	CHPOX_BENCH_LIVE_MIB=$${CHPOX_BENCH_LIVE_MIB:-1024,4096} $(GO) test -run='^$$' -bench=. -benchtime=3x -timeout 60m ./bench

# The manual page, generated from the command line's definition
# (cmd/chpox TestManPageCurrent fails when it is out of date).
man: build
	$(BIN) man > docs/chpox.1

demo: setup build
	./scripts/demo.sh

clean:
	rm -rf bin

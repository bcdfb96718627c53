# chpox: checkpoint/restore for Linux processes.
#   make demo   build and show start, checkpoint, kill, restore, goes on
#   make test   everything CI runs (as root)
#   make bench  dump/restore throughput against this machine's limits

GO    ?= go
BIN   := bin/chpox
# A count, not a duration: a duration makes go1.26's fuzz coordinator fail now
# and then with a bare "context deadline exceeded" at its end (golang/go#75804).
FUZZTIME ?= 100000x

.PHONY: all build setup test lint unit e2e fuzz fuzz-long bench stress faults demo clean

all: build

# What a fresh machine of this kind may lack: gcc builds the test programs,
# python3 runs some of them, nft sets the network lock of TCP connections.
# Go comes with the machine.
setup:
	@command -v gcc >/dev/null && command -v python3 >/dev/null && command -v nft >/dev/null || \
		(apt-get update && apt-get install -y gcc libc6-dev python3 nftables)
	$(GO) mod download

build:
	$(GO) build -o $(BIN) ./cmd/chpox

test: setup lint unit e2e fuzz

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./pkg/... ./cmd/...

e2e:
	$(GO) test -race -count=1 -timeout 10m ./e2e

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

bench: setup
	$(GO) test -run='^$$' -bench=. -benchtime=3x -timeout 30m ./bench

demo: setup build
	./scripts/demo.sh

clean:
	rm -rf bin

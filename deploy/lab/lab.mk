# Real-Nova lab targets (included by the top-level Makefile).
# LAB_COMPUTES sets the number of fake-driver computes.
LAB_COMPUTES ?= 3
LAB_SH := deploy/lab

.PHONY: lab-install lab-up lab-down lab-status lab-contract lab-scenarios lab-test lab-bench lab-soak lab-chaos lab-watchdog

lab-install: ## install the lab's Debian packages (real Nova, MariaDB, RabbitMQ, ipmi_sim), idempotent
	$(LAB_SH)/install.sh

# lab-up builds IHA's binaries into LAB_IHA_BIN: every compute's host then
# runs an iha-agent and starts nova-compute behind `iha-agent gate`
# (LAB_IHA_BIN= runs the bare lab).
LAB_IHA_BIN ?= $(CURDIR)/.cache/lab-iha-bin

lab-up: lab-install ## start a real Nova (Zed) with LAB_COMPUTES fake computes, their ipmi_sim BMCs and iha-agents on 127.0.0.1
	if [ -n "$(LAB_IHA_BIN)" ]; then mkdir -p "$(LAB_IHA_BIN)" && for c in iha-agent iha-leader iha; do go build -o "$(LAB_IHA_BIN)/$$c" ./cmd/$$c || exit 1; done && \
	  go build -o "$(LAB_IHA_BIN)/iha-wddouble" ./internal/wddouble/iha-wddouble; fi
	LAB_IHA_BIN="$(LAB_IHA_BIN)" $(LAB_SH)/up.sh $(LAB_COMPUTES)

lab-down: ## stop exactly the processes the lab started and verify they are gone
	$(LAB_SH)/down.sh

lab-status: ## show the lab's recorded processes and Nova's view of the computes
	$(LAB_SH)/status.sh

lab-contract: ## run the novasim contract suite against the running lab (make lab-up first)
	. "$${LAB_DIR:-$(LAB_SH)/.state}/env" && go test -race -count=1 -run Contract ./pkg/novasim/ -v

lab-scenarios: ## IHA's end-to-end scenarios (3 real iha-leaders, the lab's iha-agents) against the running lab (make lab-up first)
	LAB_SCENARIO_DETECTION=$(LAB_SCENARIO_DETECTION) LAB_SCENARIO_REUSE=1 LAB_DIR="$${LAB_DIR:-$(CURDIR)/$(LAB_SH)/.state}" go test -tags lab -count=1 -timeout 60m -v -run '^TestIHAOnRealNova$$' ./deploy/lab/scenarios/

# lab-test brings up labs of its own (ports 18800 and 18900, state in temp
# dirs) and stops them: the lab's own checks, then the contract suite and
# IHA's scenarios on one more lab. Each prints its up/down times and figures.
# LAB_SCENARIO_DETECTION=nova|gossip|both forces one DETECTION_MODE on every
# scenario; empty, the scenarios run their own (1+3: both, both, nova).
LAB_SCENARIO_DETECTION ?=

lab-test: lab-install ## labtest (up, checks, down), then contract + IHA scenarios on a fresh lab; no recorded process survives
	scripts/go-test.sh -tags lab -count=1 -timeout 30m -v ./deploy/lab/labtest/
	LAB_SCENARIO_DETECTION=$(LAB_SCENARIO_DETECTION) scripts/go-test.sh -tags lab -count=1 -timeout 60m -v -run '^TestIHAOnRealNova$$' ./deploy/lab/scenarios/

# lab-bench: issue 14's stopwatch, on a lab of its own (4 computes, Nova's
# defaults, 3 leaders): LAB_BENCH_TRIALS failures per mode (LAB_BENCH_MODES,
# LAB_BENCH_FAILURES), a BENCH JSON line per trial and a table at the end.
LAB_BENCH_TRIALS ?= 8
LAB_BENCH_MODES ?= both,gossip,nova
LAB_BENCH_FAILURES ?= bmc,kill,stop

lab-bench: lab-install ## time IHA's recoveries on the real-Nova lab: LAB_BENCH_TRIALS (8) failures per detection mode, a table of medians
	LAB_BENCH_TRIALS=$(LAB_BENCH_TRIALS) LAB_BENCH_MODES=$(LAB_BENCH_MODES) LAB_BENCH_FAILURES=$(LAB_BENCH_FAILURES) \
	  scripts/go-test.sh -tags lab -count=1 -timeout 4h -run '^$$' -bench '^BenchmarkLabRecovery$$' -benchtime 1x ./deploy/lab/scenarios/

# lab-soak: no real failure for ~5 min per mode (LAB_SOAK_MODES, default
# both,nova): restarts, pauses and CPU hogs on healthy computes; fails if
# one is fenced, forced down or evacuated.
LAB_SOAK_MODES ?= both,nova

lab-soak: lab-install ## false-fence soak on the real-Nova lab (~5 min per mode in LAB_SOAK_MODES): fails if a healthy host is fenced, forced down or evacuated
	LAB_SOAK_MODES=$(LAB_SOAK_MODES) scripts/go-test.sh -tags 'lab labsoak' -count=1 -timeout 60m -v -run '^TestLabSoak$$' ./deploy/lab/scenarios/

# lab-chaos: issue 22's faults on a LAB_CHAOS=1 lab (5 computes, agents and
# leaders in namespaces on a mesh network of their own, net.sh):
# LAB_CHAOS_SCENARIOS (default all: 1,2,3,4,5,6,7,8), LAB_CHAOS_KILL_RUNS.
LAB_CHAOS_SCENARIOS ?= 1,2,3,4,5,6,7,8
LAB_CHAOS_KILL_RUNS ?= 3

lab-chaos: lab-install ## faults on the real-Nova lab: mesh/Nova/controller partitions, Nova API and RabbitMQ outages, a hung BMC, leader kills, clock skew
	LAB_CHAOS_SCENARIOS=$(LAB_CHAOS_SCENARIOS) LAB_CHAOS_KILL_RUNS=$(LAB_CHAOS_KILL_RUNS) \
	  scripts/go-test.sh -tags 'lab labchaos' -count=1 -timeout 90m -v -run '^TestLabChaos$$' ./deploy/lab/scenarios/

# lab-watchdog: issue 17's watchdog self-fencing on a LAB_CHAOS=1 lab whose
# every agent is armed with the device double (LAB_WATCHDOG=10s): a hung
# host with a dead BMC, a host cut off with its BMC, every leader stopped,
# the acting leader killed during the watchdog wait, a hung host at the
# default FENCING_TIMEOUT. LAB_WATCHDOG_SCENARIOS (default a,b,c,d,e) picks
# some; LAB_WD_TRIALS repeats a.
LAB_WATCHDOG_SCENARIOS ?= a,b,c,d,e
LAB_WD_TRIALS ?= 1

lab-watchdog: lab-install ## watchdog self-fencing on the real-Nova lab (~10 min): dead BMCs, a cut-off host, all leaders stopped, a leader killed mid-wait
	LAB_WATCHDOG_SCENARIOS=$(LAB_WATCHDOG_SCENARIOS) LAB_WD_TRIALS=$(LAB_WD_TRIALS) \
	  scripts/go-test.sh -tags 'lab labchaos' -count=1 -timeout 60m -v -run '^TestLabWatchdog$$' ./deploy/lab/scenarios/

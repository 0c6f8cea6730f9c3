# SyncTalk on Triton: `make demo` then `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VARIANT ?= full
REPOSITORY := build/repository/cpu

.PHONY: install agents speech turn netbench models render serve cluster demo web browser test lint format bench soak gpu-check clean

install: $(STAMP) speech

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# the avatar as a Pipecat service (services/synctalk_pipecat, examples/pipecat_avatar/): its own
# environment, .venv-agents, as pipecat-ai needs a newer protobuf than perf_analyzer's tritonclient
AGENTS := .venv-agents
AGENTS_STAMP := $(AGENTS)/.installed
agents: $(AGENTS_STAMP) speech

$(AGENTS_STAMP): requirements-agents.txt constraints-agents.txt pyproject.toml
	$(PYTHON) -m venv $(AGENTS)
	$(AGENTS)/bin/python -m pip install -q --upgrade pip
	$(AGENTS)/bin/python -m pip install -q -r requirements-agents.txt -c constraints-agents.txt
	$(AGENTS)/bin/python -m pip install -q --no-deps -e .
	touch $@

models: build/models/models.json

build/models/models.json: $(STAMP) ops/synctalk_build/build_models.py ops/synctalk_build/onnx_graph.py
	$(BIN)/synctalk-build-models --out build/models

render: models
	$(BIN)/synctalk-render-repository --profile cpu --variant $(VARIANT) --out $(REPOSITORY)

serve: render
	$(BIN)/synctalk-serve --repository $(REPOSITORY)

# a local cluster: REPLICAS tritonservers on loopback (8100 + 10 i ...) and the edge on 8000/8001,
# in the foreground like make serve; build/cluster/replicas.json says each replica's pid, ports and
# avatars. Each avatar is placed on 2 replicas (FACTOR) within each one's REPLICA_MEMORY (e.g. 8G;
# default: this host's available memory shared out)
REPLICAS ?= 2
REPLICA_MEMORY ?=
FACTOR ?=
cluster: render
	$(BIN)/python -m synctalk_ops.cluster --repository $(REPOSITORY) --replicas $(REPLICAS) \
		$(if $(REPLICA_MEMORY),--replica-memory $(REPLICA_MEMORY)) $(if $(FACTOR),--factor $(FACTOR)) \
		$(if $(ON_DEMAND),--on-demand)

demo: render
	$(BIN)/python -m devtools.demo --repository $(REPOSITORY)

# the web page against the local server (make serve in another shell): http://127.0.0.1:7860/
# (WEB_ARGS="--port 8080" and so on); it lists the repository with the install's API key
WEB_URL ?= 127.0.0.1:8001
WEB_ARGS ?=
web: $(STAMP)
	@key=$${SYNCTALK_API_KEY_FILE:-$(CURDIR)/build/secrets/api_key}; \
	if [ -f "$$key" ]; then export SYNCTALK_API_KEY_FILE="$$key"; fi; \
	$(BIN)/synctalk-client web --url $(WEB_URL) $(WEB_ARGS)

# the web page's tests drive Debian's chromium through chromium-driver: installed where missing
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	else sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	echo "installing Debian's chromium and chromium-driver (the web page's tests)"; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; fi

# a TURN server for the WebRTC tests (its short-lived credentials): Debian's coturn, installed where missing
turn:
	@if command -v turnserver >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then echo "no apt-get: install coturn yourself for the TURN tests"; \
	else sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	echo "installing Debian's coturn (the TURN tests)"; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null; fi

# the network bench (devtools/netbench.py: a viewer behind a NAT in network namespaces): Debian's
# iproute2 and iptables, installed where missing
netbench:
	@if command -v ip >/dev/null && command -v iptables >/dev/null && command -v tc >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then echo "no apt-get: install iproute2 and iptables yourself for the network bench"; \
	else sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	echo "installing Debian's iproute2 and iptables (the network bench)"; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null; fi

# text to speech (synctalk_client.tts): Debian's espeak-ng, installed where missing
speech:
	@if command -v espeak-ng >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then echo "no apt-get: install espeak-ng yourself for text to speech"; \
	else sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	echo "installing Debian's espeak-ng (text to speech)"; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; fi

# pytest exits 5 when it collects no test: report it as a failure of its own
test: models browser speech agents turn netbench
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

# ruff: formatting and lint rules in pyproject.toml ([tool.ruff])
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# benchmarks: CPU profile, full model; writes benchmarks/results/latest.json and benchmarks/README.md
bench: models
	$(BIN)/python -m benchmarks.bench

# the long soak: 4 clients for 5 minutes against a fresh CPU-profile server (tiny models)
SOAK_SECONDS ?= 300
soak: models
	$(BIN)/python -m benchmarks.soak --start-server --variant tiny --clients 4 --duration $(SOAK_SECONDS) --warmup 30

# the GPU check: one prepared command for a bare GPU host (python3 with torch + torchvision built
# for CUDA, onnx, onnxruntime; nothing installed, no make install): refuses with exit 2 on a host
# without an NVIDIA GPU; GPU_CHECK_ARGS=--plan prints what it would run
GPU_CHECK_ARGS ?=
gpu-check:
	$(PYTHON) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf build out

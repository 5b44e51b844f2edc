# The image deploy/kubernetes/ runs: fusion-agent, fusion-controller and fusionctl, with the rack
# presets. Build it from the repository's root with the tag the manifests name:
#
#   docker build -t fusionrack:0.1.0 .
#
# then push it where the cluster pulls from (and set that name in the manifests, or
# `kind load docker-image fusionrack:0.1.0` for a kind cluster).
FROM python:3.11-slim

WORKDIR /build
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY proto proto
COPY emulator emulator
COPY agent agent
COPY controller controller
COPY fusionctl fusionctl
COPY deploy/presets deploy/presets
COPY deploy/prometheus deploy/prometheus
RUN pip install --no-cache-dir . && rm -rf /build

# The manifests' pods run as this user and group (runAsUser / fsGroup), never as root.
RUN useradd --system --uid 10001 --user-group --no-create-home fusionrack
USER 10001
WORKDIR /

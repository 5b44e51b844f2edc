#!/usr/bin/env bash
# Installs the real services the tests run against (mosquitto, prometheus/promtool, etcd) and the
# Go toolchain an outside Go client is built with (tests/integration/test_go_client.py) when they
# are missing. Needs root for apt-get; otherwise says what to install and carries on, so a
# developer without root still gets the tests that do not need them to fail loudly, not hang.
set -euo pipefail

# `--only mosquitto`: what `make up` needs (events); the tests need all of them.
wanted=(mosquitto prometheus etcd-server)
# A Go client generated from proto/ and built offline with Debian's Go packages: protoc and its Go
# plugins, and the sources of grpc-go and of both Go protobuf APIs (/usr/share/gocode). The 1.5
# protobuf package, not the 1.3 one grpc-go's package would otherwise bring: with 1.3, grpc-go
# panics decoding the first answer into a message today's protoc-gen-go generates.
go_packages=(golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
    golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev)
wanted+=("${go_packages[@]}")
if [ "${1:-}" = "--only" ] && [ -n "${2:-}" ]; then wanted=("$2"); fi
missing=()
for package in "${wanted[@]}"; do
    case "$package" in
        mosquitto) command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto) ;;
        prometheus) command -v prometheus >/dev/null 2>&1 || missing+=(prometheus) ;;
        # The controllers' shared store (fusion-controller --store etcd://...).
        etcd-server) command -v etcd >/dev/null 2>&1 || missing+=(etcd-server) ;;
        *) dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' ||
            missing+=("$package") ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "warning: ${missing[*]} not installed and not root; install them with:" >&2
    echo "    sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: ${missing[*]} not installed and there is no apt-get; install them by hand" >&2
    exit 0
fi
echo "installing ${missing[*]} with apt-get ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the packages from starting system-wide daemons: tests start their own.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed ${missing[*]}"

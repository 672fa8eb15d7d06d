#!/bin/sh
# Install the Debian packages the nftables tests need: `nft` (package nftables) to check generated
# rulesets with `nft -c -f` and to load them into test namespaces, and `ip` (package iproute2) to build
# the network namespaces, veth pairs and router of the live twin test; and a Java 17 runtime (package
# openjdk-17-jre-headless), which PySpark needs for the DuckDB-vs-Spark mapping test (`--engine spark`).
#
# Idempotent: a package whose command is already on PATH is not touched, and when both are there the
# script changes nothing and does not call apt at all. It only ever installs these packages,
# without recommended extras. Installing needs root (CI runs as root); without root it says what to
# run instead and fails.
#   usage: scripts/install-system-deps.sh        (the Makefile's test target runs it)
set -eu

# sbin is not on every user's PATH, and nft and ip live there.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export PATH

missing=""
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v java >/dev/null 2>&1 || missing="$missing openjdk-17-jre-headless"

if [ -z "$missing" ]; then
    echo "install-system-deps: nft, ip and java already installed; nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: missing Debian packages:$missing" >&2
    echo "install-system-deps: run as root: apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: missing packages:$missing, and this is not a Debian-based system (no apt-get)" >&2
    exit 1
fi

echo "install-system-deps: installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $missing
command -v nft >/dev/null 2>&1 && command -v ip >/dev/null 2>&1
echo "install-system-deps: done: $(nft --version), $(ip -V)"

#!/usr/bin/env bash
# Installs the Debian packages that the build and the tests need, only when
# one is missing: dpkg-query first, then a single `apt-get update` and
# `apt-get install -y` of just the missing ones (sudo only when not root).
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  librdkafka-dev libavro-dev libhiredis-dev libconfig-dev libmicrohttpd-dev libcmocka-dev
  redis-server redis-tools kcat
  python3-confluent-kafka python3-avro python3-redis python3-pytest python3-yaml
  prometheus clang clang-format systemd tzdata
  chromium
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages installed"
  exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Installs what KIM needs besides Python packages on a Debian/Ubuntu machine:
# Java 17+ and Maven (the built-in Kafka broker), the PostgreSQL server (tests and
# production store), Chromium (browser tests of the case managers' screens).
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
{ command -v chromium && command -v chromedriver && [ -e /usr/lib/chromium/locales/de.pak ]; } >/dev/null 2>&1 \
  || need+=(chromium chromium-driver chromium-l10n)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The PostgreSQL package starts a cluster of its own on 5432; tests start their own.
echo "system dependencies present: java $(java -version 2>&1 | head -1 | cut -d'"' -f2), $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g'), $(ls -d /usr/lib/postgresql/*/ | head -1)"

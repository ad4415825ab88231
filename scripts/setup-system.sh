#!/usr/bin/env bash
# Debian/Ubuntu packages the full test suite needs: Slurm + munge + MariaDB (a real single-node
# cluster for the Slurm tests, sacct through slurmdbd), Docker (docker.io, with tini for
# `docker run --init`), debootstrap (the image tests' stand-in for NVIDIA's base image) and
# the shell linter. Needs root; a no-op when everything is already installed. No daemon is started:
# tests/cluster/slurm-local.sh and tests/docker/docker-local.sh start their own.
set -euo pipefail
pkgs=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server docker.io tini debootstrap
      shellcheck python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ "${#missing[@]}" = 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-system.sh: missing ${missing[*]} (needs root and apt-get); the Slurm and image" \
       "tests will skip" >&2
  exit 1
fi
# Keep the packages' init scripts from starting daemons (slurm, munge, mariadb, docker): the
# project's own scripts start theirs, with their own state, and stop them by pid.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
rc=0
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
[ "$made_policy" = 0 ] || rm -f "$policy"
exit "$rc"

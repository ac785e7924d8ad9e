#!/usr/bin/env bash
# Installs the Debian packages behind the monitoring checks, the pictures and the Docker tests,
# only those whose program is missing (a no-op on a machine that has them: safe to call often).
#
#   monitoring/install.sh prometheus alertmanager chromium docker mmdebstrap kubectl
#
# prometheus = prometheus + promtool, alertmanager = prometheus-alertmanager + amtool,
# docker = docker.io (dockerd, containerd, runc and the 20.10 client at /usr/bin/docker),
# kubectl = kubectl (kustomize built in: the offline checks of infrastructure/k8s).
set -euo pipefail

declare -A PACKAGE=(
  [prometheus]=prometheus
  [alertmanager]=prometheus-alertmanager
  [chromium]=chromium
  [docker]=docker.io
  [mmdebstrap]=mmdebstrap
  [nginx]=nginx
  [wrk]=wrk
  [kubectl]=kubectl
)
declare -A PROGRAM=(
  [prometheus]=/usr/bin/promtool
  [alertmanager]=/usr/bin/prometheus-alertmanager
  [chromium]=/usr/bin/chromium
  [docker]=/usr/sbin/dockerd
  [mmdebstrap]=/usr/bin/mmdebstrap
  [nginx]=/usr/sbin/nginx
  [wrk]=/usr/bin/wrk
  [kubectl]=/usr/bin/kubectl
)

missing=()
for tool in "$@"; do
  [[ -n "${PACKAGE[$tool]:-}" ]] || { echo "install.sh: unknown tool '$tool' (known: ${!PACKAGE[*]})" >&2; exit 2; }
  [[ -x "${PROGRAM[$tool]}" ]] || missing+=("${PACKAGE[$tool]}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "install.sh: needs root to install ${missing[*]}: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "install.sh: apt-get install ${missing[*]}" >&2
# the package lists may be missing or stale on a fresh machine: update once, then retry
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }

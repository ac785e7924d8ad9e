#!/bin/bash
# Fill ALERTMANAGER_WEBHOOK_URL into the configuration (Alertmanager 0.25 reads no environment
# variables; perl is part of every Debian image), then run Alertmanager with clustering off.
set -euo pipefail
: "${ALERTMANAGER_WEBHOOK_URL:?set ALERTMANAGER_WEBHOOK_URL to the receiver of the alerts}"
config=/tmp/alertmanager.yml  # the root file system may be read-only
perl -pe 's/\$\{ALERTMANAGER_WEBHOOK_URL\}/$ENV{ALERTMANAGER_WEBHOOK_URL}/g' \
  /etc/alertmanager/alertmanager.yml.in > "$config"
exec /usr/bin/prometheus-alertmanager --config.file="$config" --storage.path=/alertmanager \
  --web.listen-address=:9093 --cluster.listen-address= "$@"

#!/bin/sh
# uplinkd hook for `[[uplink.hook]] on = ["addr-change"]`: tell a server with a
# static address the uplink's new address over ssh, as the old check_ip cron
# script did (seed 004). Usage in the config:
#   command = ["/etc/uplinkd/hooks/publish-ssh.sh", "user@static.example.net"]
# uplinkd passes the data in UPLINKD_* environment variables (never on a shell
# line); the server name comes as the only argument.
set -eu
server=${1:?usage: publish-ssh.sh USER@SERVER}
# The address was lost (link down): nothing to publish until the next one.
[ -n "${UPLINKD_NEW_IP:-}" ] || exit 0
printf '%s\n' "$UPLINKD_NEW_IP" |
  ssh -o BatchMode=yes -o ConnectTimeout=10 "$server" 'cat > ~/html/server/current_ip'

#!/bin/sh
# uplinkd command publisher: write the uplink's new address into a file on a
# server with a static address, over ssh (what the old check_ip cron script of
# seed 004 did with `echo $IP | ssh SERVER 'cat > ~/html/server/current_ip'`).
# uplinkd runs it once the new address is stable, exactly once per address:
#
#   [[uplink.publish]]
#   kind    = "command"
#   command = ["/etc/uplinkd/hooks/publish-ssh.sh", "me@static.example.net"]
#   # optional second argument: the file on the server, relative to the
#   # remote home directory (default html/server/current_ip)
#
# No secrets in here. ssh authenticates with a key file:
#   UPLINKD_SSH_KEY          default /etc/uplinkd/ssh/id_ed25519 (mode 0600)
#   UPLINKD_SSH_KNOWN_HOSTS  default /etc/uplinkd/ssh/known_hosts (the
#                            server's host key must be in it: no TOFU)
# Set them in the daemon's environment (systemd: Environment=) if needed. On
# the server, the key can be limited in authorized_keys to this one job:
#   restrict,command="cat > html/server/current_ip.tmp && mv html/server/current_ip.tmp html/server/current_ip" ssh-ed25519 AAAA...
#
# uplinkd passes the data in UPLINKD_* environment variables, never on a
# shell line. Exit status: 0 published; 64 (EX_USAGE) means this cannot work
# as configured and uplinkd stops retrying until the config changes; anything
# else (ssh's 255 when the server is unreachable) is retried with backoff.
set -eu

usage() { echo "publish-ssh.sh: $*" >&2; exit 64; }

server=${1:-}
file=${2:-html/server/current_ip}
[ -n "$server" ] || usage "usage: publish-ssh.sh USER@SERVER [REMOTE_FILE]"
case $server in -*) usage "server must not start with '-'" ;; esac
# The remote side runs the file name through its shell: allow only plain
# path characters, so nothing in it can be shell syntax.
case $file in '' | -* | *[!A-Za-z0-9._/-]*) usage "remote file may only contain letters, digits, '.', '_', '/', '-'" ;; esac
ip=${UPLINKD_NEW_IP:-}
case $ip in '' | *[!0-9A-Fa-f.:]*) usage "UPLINKD_NEW_IP is not an address: '$ip'" ;; esac

key=${UPLINKD_SSH_KEY:-/etc/uplinkd/ssh/id_ed25519}
known=${UPLINKD_SSH_KNOWN_HOSTS:-/etc/uplinkd/ssh/known_hosts}

# Written to a temporary file and renamed, so a reader on the server never
# sees a half-written address.
printf '%s\n' "$ip" | ssh -i "$key" -o IdentitiesOnly=yes -o BatchMode=yes \
	-o ConnectTimeout=10 -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$known" \
	-- "$server" "cat > $file.tmp && mv $file.tmp $file"

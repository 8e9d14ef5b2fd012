#!/usr/bin/env bash
# Deploys a cross-built pimesh to a Raspberry Pi over SSH and (re)starts it under systemd.
#
#   cross/deploy.sh [--dry-run] [--target TRIPLE] [--binary FILE] [--config FILE] USER@HOST
#
# `make deploy PI=pi@kitchen.local [TARGET=…] [CONFIG=…] [DRY_RUN=1]` builds first, then runs this.
# Every command is printed before it runs; --dry-run prints them and runs none.
#
# What it does, in order, stopping at the first failure:
#   1. copies the binary, the unit and the config to ~/pimesh-deploy on the Pi;
#   2. runs the copied binary there (`--version`, `check --config`), so a binary for the wrong
#      CPU or C library, or a broken config, stops the deploy before anything is replaced;
#   3. creates the groups gpio and dialout if missing and the system user pimesh in them;
#   4. installs /usr/bin/pimesh (atomically: a running agent keeps its old file until restart),
#      /etc/systemd/system/pimesh.service, and /etc/pimesh/pimesh.toml (--config replaces it and
#      keeps the previous one as pimesh.toml.bak; without --config an existing one is kept and
#      the example is installed only on a first deploy);
#   5. reloads systemd, enables the service for boot, restarts it, waits until the agent answers
#      and prints `systemctl status` and `pimesh get`.
# Running it again is safe. The data dir /var/lib/pimesh (instance UUID and state) is never
# touched, so an upgrade keeps the instance's identity.
#
# The SSH user needs sudo without a password prompt (the default for Raspberry Pi OS's first
# user), or deploy as root@HOST. SSH connections are shared, so a password is asked once.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

usage() {
  sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

dry_run=0
target="${TARGET:-aarch64-unknown-linux-musl}"
binary=""
config=""
pi=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --target) target="${2:?--target needs a target triple}"; shift ;;
    --binary) binary="${2:?--binary needs a file}"; shift ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    -h | --help) usage ;;
    -*) echo "deploy.sh: unknown option $1" >&2; usage ;;
    *)
      [ -z "$pi" ] || { echo "deploy.sh: one Pi at a time (got $pi and $1)" >&2; exit 2; }
      pi="$1" ;;
  esac
  shift
done
[ -n "$pi" ] || { echo "deploy.sh: name the Pi, e.g. pi@kitchen.local" >&2; usage; }

if [ -z "$binary" ]; then
  binary="${CARGO_TARGET_DIR:-$root/target}/$target/release/pimesh"
fi
unit="$here/pimesh.service"
example="$here/pimesh.example.toml"

if [ "$dry_run" -eq 0 ]; then
  [ -f "$binary" ] || {
    echo "deploy.sh: no binary at $binary; build it first: make pi TARGET=$target" >&2
    exit 1
  }
  if [ -n "$config" ] && [ ! -f "$config" ]; then
    echo "deploy.sh: no config file at $config" >&2
    exit 1
  fi
fi

# Prefix of commands run as root: root@ needs none; anyone else uses sudo without a prompt
# (-n fails instead of hanging).
sudo="sudo -n "
if [ "${pi%%@*}" = root ]; then sudo=""; fi
stage=pimesh-deploy
ssh_opts=(-o ControlMaster=auto -o "ControlPath=${TMPDIR:-/tmp}/pimesh-ssh-$(id -u)-%C" -o ControlPersist=60)

# Prints a command, then runs it unless this is a dry run.
run() {
  echo "+ $*"
  [ "$dry_run" -eq 1 ] || "$@"
}

# Runs one command line on the Pi.
remote() {
  echo "+ ssh $pi $*"
  # shellcheck disable=SC2029 # the command line is built here on purpose
  [ "$dry_run" -eq 1 ] || ssh "${ssh_opts[@]}" "$pi" "$*"
}

# Runs a small shell script on the Pi as root; the script must not contain single quotes.
remote_root() {
  remote "${sudo}sh -c '$1'"
}

finish() {
  [ "$dry_run" -eq 1 ] || ssh "${ssh_opts[@]}" -O exit "$pi" >/dev/null 2>&1 || true
}
trap finish EXIT

echo "# deploying $binary ($target) to $pi$([ "$dry_run" -eq 1 ] && echo ' (dry run: nothing runs)')"
echo "# ssh and scp share one connection: ${ssh_opts[*]}"

# 1. Stage.
remote "mkdir -p $stage"
if [ -n "$config" ]; then
  run scp "${ssh_opts[@]}" "$binary" "$unit" "$pi:$stage/"
  run scp "${ssh_opts[@]}" "$config" "$pi:$stage/pimesh.toml"
else
  run scp "${ssh_opts[@]}" "$binary" "$unit" "$example" "$pi:$stage/"
fi

# 2. Check the binary and the config on the Pi itself.
if ! remote "$stage/pimesh --version"; then
  echo "deploy.sh: the $target binary does not run on $pi: pick the TARGET for its CPU and OS," >&2
  echo "  e.g. aarch64-unknown-linux-musl for a 64-bit OS (see cross/README.md)" >&2
  exit 1
fi
if [ -n "$config" ]; then
  remote "$stage/pimesh check --config $stage/pimesh.toml"
fi

# 3. The user and its groups.
remote_root "getent group gpio >/dev/null || groupadd --system gpio"
remote_root "getent group dialout >/dev/null || groupadd --system dialout"
remote_root "getent passwd pimesh >/dev/null || useradd --system --user-group --home-dir /var/lib/pimesh --no-create-home --shell /usr/sbin/nologin --comment pimesh pimesh"
remote "${sudo}usermod --append --groups gpio,dialout pimesh"

# 4. Files.
remote "${sudo}install -d -m 0755 /etc/pimesh"
if [ -n "$config" ]; then
  remote_root "if [ -f /etc/pimesh/pimesh.toml ] && ! cmp -s $stage/pimesh.toml /etc/pimesh/pimesh.toml; then cp -p /etc/pimesh/pimesh.toml /etc/pimesh/pimesh.toml.bak; fi"
  remote "${sudo}install -m 0640 -o root -g pimesh $stage/pimesh.toml /etc/pimesh/pimesh.toml"
else
  remote "${sudo}install -m 0644 $stage/pimesh.example.toml /etc/pimesh/pimesh.example.toml"
  remote_root "[ -e /etc/pimesh/pimesh.toml ] || install -m 0640 -o root -g pimesh $stage/pimesh.example.toml /etc/pimesh/pimesh.toml"
fi
remote "${sudo}$stage/pimesh check --config /etc/pimesh/pimesh.toml"
remote "${sudo}install -m 0755 $stage/pimesh /usr/bin/pimesh.new"
remote "${sudo}mv -f /usr/bin/pimesh.new /usr/bin/pimesh"
remote "${sudo}install -m 0644 $stage/pimesh.service /etc/systemd/system/pimesh.service"

# 5. Service.
remote "${sudo}systemctl daemon-reload"
remote "${sudo}systemctl enable pimesh.service"
remote "${sudo}systemctl restart pimesh.service"
remote_root "i=0; until pimesh get >/dev/null 2>&1; do i=\$((i+1)); if [ \$i -ge 40 ]; then echo pimesh did not answer within 20 s >&2; exit 1; fi; sleep 0.5; done"
remote "${sudo}systemctl --no-pager --lines=5 status pimesh.service"
remote "${sudo}pimesh get"
remote "rm -rf $stage"
echo "# done: $pi runs pimesh; logs: ssh $pi journalctl -u pimesh -f"

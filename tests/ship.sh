#!/usr/bin/env bash
# The path from this repository to a Raspberry Pi, tested on an x86 Debian machine without a Pi
# or Docker (`make ship-test`):
#   1. Docker-free release builds for aarch64 (musl) and armv7 (gnueabihf), run under qemu-user:
#      an aarch64 agent switched by the armv7 CLI over loopback, stopped with SIGTERM;
#   2. the stripped aarch64 binary stays under 6 MB;
#   3. systemd-analyze verify of the unit is silent; its security exposure is printed;
#   4. the .deb packages build with the right contents and control fields, and (as root) the
#      arm64 one installs, removes (keeping the data dir) and purges (deleting it);
#   5. cross/deploy.sh --dry-run prints every command of a deploy.
# Installs what it needs (rustup targets, Debian's cross gcc, qemu-user, systemd, cargo-deb).
# Reuses CARGO_TARGET_DIR when set, so a second run only relinks.
#
# `test && pass … || fail …` is meant: pass only echoes and always succeeds.
# shellcheck disable=SC2015
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
aarch64="aarch64-unknown-linux-musl"
armv7="armv7-unknown-linux-gnueabihf"
max_size=6000000

work="$(mktemp -d)"
agent_pid=""
mesh_pids=""
cleanup() {
  # shellcheck disable=SC2086
  [ -n "$mesh_pids" ] && kill -KILL $mesh_pids 2>/dev/null

  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -KILL "$agent_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

failures=0
passes=0
step() { printf '\n=== %s\n' "$*"; }
pass() { passes=$((passes + 1)); echo "ok: $*"; }
fail() { failures=$((failures + 1)); echo "FAIL: $*" >&2; }
die() { echo "FAIL: $*" >&2; echo "ship: $passes passed, $((failures + 1)) failed"; exit 1; }

# Polls a command until it succeeds or the deadline (seconds) passes.
wait_for() {
  local seconds="$1"; shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

apt_install() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

step "tools"
apt_install qemu-user systemd python3 binutils file
for target in "$aarch64" "$armv7"; do
  bash cross/toolchain.sh "$target" || die "cannot install the $target toolchain (cross/toolchain.sh)"
done
if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install cargo-deb --locked || die "cannot install cargo-deb from crates.io"
fi

# --- 1. builds and an emulated agent ------------------------------------------------------
step "1. Docker-free release builds"
for target in "$aarch64" "$armv7"; do
  start=$SECONDS
  cargo build --release --locked --target "$target" || die "cargo build --release --target $target failed"
  echo "built $target in $((SECONDS - start)) s"
done
bin_a64="$CARGO_TARGET_DIR/$aarch64/release/pimesh"
bin_v7="$CARGO_TARGET_DIR/$armv7/release/pimesh"
run_a64() { qemu-aarch64 "$bin_a64" "$@"; }
run_v7() { qemu-arm -L /usr/arm-linux-gnueabihf "$bin_v7" "$@"; }

grep -q 'ARM aarch64.*statically linked' <<<"$(file -b "$bin_a64")" \
  && pass "$aarch64 binary is a static aarch64 executable" \
  || fail "$bin_a64 is not a static aarch64 executable: $(file -b "$bin_a64")"
grep -q 'ELF 32-bit LSB.*ARM, EABI5' <<<"$(file -b "$bin_v7")" \
  && pass "$armv7 binary is a 32-bit ARM EABI5 executable" \
  || fail "$bin_v7 is not a 32-bit ARM executable: $(file -b "$bin_v7")"

version="pimesh $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
for arch in a64 v7; do
  out="$("run_$arch" --version 2>&1)" || true
  [ "$out" = "$version" ] && pass "$arch under qemu: --version says $out" \
    || fail "$arch under qemu: --version printed '$out', expected '$version'"
  out="$("run_$arch" boards 2>&1)" || true
  grep -q '^pi4b ' <<<"$out" && grep -q '^pizero2w ' <<<"$out" \
    && pass "$arch under qemu: boards lists pi4b and pizero2w" \
    || fail "$arch under qemu: boards did not list pi4b and pizero2w; it printed: $out"
done

step "1b. an aarch64 agent switched by the armv7 CLI (both under qemu)"
# One emulated agent and the other architecture's CLI; step 1c then forms a mesh.
data="$work/agent"
port="$(free_port)"
# qemu-user runs the guest in its own process, so $! is the agent's pid as agent.json has it.
qemu-aarch64 "$bin_a64" run --no-mdns --data-dir "$data" --port "$port" --name qemu-a64 >"$work/agent.log" 2>&1 &
agent_pid=$!
agent_ready() {
  grep -q "\"pid\": $agent_pid," "$data/agent.json" 2>/dev/null && grep -q "\"port\": $port," "$data/agent.json"
}
if wait_for 30 agent_ready; then
  pass "aarch64 agent (pid $agent_pid) is up on port $port (agent.json written)"
  # --via another host's agent: a user's credentials from the environment (here the agent's own).
  if PIMESH_USER=local PIMESH_PASSWORD="$(cat "$data/credentials")" run_v7 set relay-1 on --via "127.0.0.1:$port" --timeout 10; then
    pass "armv7 CLI: set relay-1 on --via 127.0.0.1:$port exited 0"
  else
    fail "armv7 CLI: set relay-1 on --via 127.0.0.1:$port exited $?"
  fi
  pin_high() { [ "$(cat "$data/sim/gpio17" 2>/dev/null)" = 1 ]; }
  wait_for 5 pin_high && pass "sim pin $data/sim/gpio17 reads 1" \
    || fail "sim pin $data/sim/gpio17 reads '$(cat "$data/sim/gpio17" 2>/dev/null)', expected 1 after set relay-1 on"
  uuid_before="$(cat "$data/instance-id" 2>/dev/null || true)"

  # systemd stops the service with SIGTERM and kills it after TimeoutStopSec=10s.
  kill -TERM "$agent_pid"
  stopped() { ! kill -0 "$agent_pid" 2>/dev/null; }
  start=$SECONDS
  if wait_for 10 stopped; then
    status=0
    wait "$agent_pid" || status=$?
    [ "$status" -eq 0 ] && pass "agent stopped on SIGTERM in $((SECONDS - start)) s, exit 0" \
      || fail "agent exited $status on SIGTERM, expected 0; log: $(tail -n 5 "$work/agent.log")"
  else
    fail "agent still running 10 s after SIGTERM (the unit's TimeoutStopSec)"
  fi
  agent_pid=""

  # An upgrade restarts the agent on the same data dir: it must keep its identity.
  qemu-aarch64 "$bin_a64" run --no-mdns --data-dir "$data" --port "$port" --name qemu-a64 >"$work/agent2.log" 2>&1 &
  agent_pid=$!
  if wait_for 30 agent_ready; then
    [ -n "$uuid_before" ] && [ "$(cat "$data/instance-id")" = "$uuid_before" ] \
      && pass "restarted agent kept its instance id" \
      || fail "instance id changed across a restart: '$uuid_before' -> '$(cat "$data/instance-id")'"
  else
    fail "agent did not come back on the same data dir; log: $(tail -n 5 "$work/agent2.log")"
  fi
  kill -TERM "$agent_pid" 2>/dev/null || true
  wait_for 10 stopped || fail "restarted agent still running 10 s after SIGTERM"
  agent_pid=""
else
  fail "aarch64 agent wrote no agent.json with port $port within 30 s; log: $(tail -n 20 "$work/agent.log")"
fi

step "1c. two emulated agents form a mesh; a command at one switches the other's relay"
mesh_cfg() {
  printf '[board]\nbackend = "sim"\n[[relay]]\nid = "%s-light"\npin = 17\n' "$1" >"$work/$1.toml"
}
mesh_cfg a64; mesh_cfg v7
port_a="$(free_port)"; port_b="$(free_port)"
qemu-aarch64 "$bin_a64" run --no-mdns --config "$work/a64.toml" --data-dir "$work/mesh-a" --port "$port_a" --name qemu-a64 >"$work/mesh-a.log" 2>&1 &
mesh_pids="$!"
mesh_a_ready() { [ -s "$work/mesh-a/agent.json" ]; }
wait_for 60 mesh_a_ready || fail "the aarch64 mesh agent did not start; log: $(tail -n 5 "$work/mesh-a.log")"
# A new Pi joins by invitation: `pimesh invite` on a member, `--join` on the newcomer.
token="$(qemu-aarch64 "$bin_a64" invite --data-dir "$work/mesh-a" 2>/dev/null || true)"
[ -n "$token" ] && pass "the aarch64 agent made an invitation" || fail "pimesh invite printed no token"
# qemu-arm itself in the background (not the run_v7 function, whose $! would be a subshell
# that kill leaves qemu running behind).
qemu-arm -L /usr/arm-linux-gnueabihf "$bin_v7" run --no-mdns --config "$work/v7.toml" --data-dir "$work/mesh-b" --port "$port_b" --name qemu-v7 --peer "127.0.0.1:$port_a" --join "$token" >"$work/mesh-b.log" 2>&1 &
mesh_pids="$mesh_pids $!"
peers_online() { run_v7 peers --data-dir "$work/mesh-b" --timeout 10 2>/dev/null | grep -q "qemu-a64 .*online"; }
if wait_for 60 peers_online; then
  pass "the armv7 agent sees the aarch64 agent online"
  if out="$(qemu-aarch64 "$bin_a64" set a64-light on --data-dir "$work/mesh-b" --timeout 10 2>&1)" \
    && grep -q "executed by qemu-a64" <<<"$out"; then
    pass "set a64-light on at the armv7 agent was executed by the aarch64 agent"
  else
    fail "set a64-light on --via the armv7 agent: $out"
  fi
  a_high() { [ "$(cat "$work/mesh-a/sim/gpio17" 2>/dev/null)" = 1 ]; }
  wait_for 10 a_high && pass "the aarch64 agent's sim pin 17 reads 1" \
    || fail "the aarch64 agent's pin 17 reads '$(cat "$work/mesh-a/sim/gpio17" 2>/dev/null)'"
  [ "$(cat "$work/mesh-b/sim/gpio17" 2>/dev/null)" = 0 ] && pass "the armv7 agent's own pin 17 is untouched" \
    || fail "the armv7 agent's pin 17 moved"
else
  fail "no mesh between the emulated agents within 60 s; logs: $(tail -n 5 "$work/mesh-a.log") $(tail -n 5 "$work/mesh-b.log")"
fi
kill -TERM $mesh_pids 2>/dev/null || true
mesh_pids=""

# --- 2. size --------------------------------------------------------------------------------
step "2. binary size"
for target in "$aarch64" "$armv7"; do
  echo "$target: $(stat -c %s "$CARGO_TARGET_DIR/$target/release/pimesh") bytes (stripped)"
done
size_a64="$(stat -c %s "$bin_a64")"
if [ "$size_a64" -le "$max_size" ]; then
  pass "stripped $aarch64 binary is $size_a64 bytes (limit $max_size)"
else
  fail "stripped $aarch64 binary is $size_a64 bytes, over the $max_size limit; sections:"
  size -A "$bin_a64" >&2 || true
fi

# --- 3. systemd unit --------------------------------------------------------------------------
step "3. systemd unit"
root="$work/root"
mkdir -p "$root/usr/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$bin_a64" "$root/usr/bin/pimesh"
cp cross/pimesh.service "$root/etc/systemd/system/pimesh.service"
exec_start="$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' cross/pimesh.service)"
[ "$exec_start" = /usr/bin/pimesh ] && pass "ExecStart runs /usr/bin/pimesh" \
  || fail "ExecStart runs '$exec_start', expected /usr/bin/pimesh (where the .deb and deploy put it)"
verify_out="$(systemd-analyze verify --root="$root" /etc/systemd/system/pimesh.service 2>&1)" || true
if [ -z "$verify_out" ]; then
  pass "systemd-analyze verify printed nothing"
else
  fail "systemd-analyze verify printed (every line is a problem):"
  echo "$verify_out" >&2
fi
for key in 'Restart=always' 'After=network-online.target' 'Wants=network-online.target' \
  'StateDirectory=pimesh' 'User=pimesh' 'SupplementaryGroups=gpio dialout' \
  'ProtectSystem=strict' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'KillSignal=SIGTERM' \
  'WantedBy=multi-user.target'; do
  grep -qx "$key" cross/pimesh.service && pass "unit has $key" || fail "unit lacks the line $key"
done
if security="$(systemd-analyze security --offline=true --root="$root" /etc/systemd/system/pimesh.service 2>&1)"; then
  exposure="$(grep -o 'Overall exposure level for pimesh.service: .*' <<<"$security" || true)"
  echo "$exposure"
  level="$(sed -n 's/.*: \([0-9.]*\) .*/\1/p' <<<"$exposure")"
  awk -v l="$level" 'BEGIN { exit !(l != "" && l <= 2.0) }' \
    && pass "security exposure $level is at most 2.0" \
    || fail "security exposure '$level' is over 2.0 (or unreadable): tighten cross/pimesh.service"
else
  echo "systemd-analyze security --offline cannot run here: $security"
fi

# --- 4. Debian packages -----------------------------------------------------------------------
step "4. Debian packages"
for target in "$aarch64" "$armv7"; do
  case "$target" in aarch64-*) arch=arm64 ;; *) arch=armhf ;; esac
  out="$(cargo deb --no-build --target "$target" 2>&1)" || { fail "cargo deb --target $target: $out"; continue; }
  deb="$(tail -n 1 <<<"$out")"
  [ -f "$deb" ] || { fail "cargo deb --target $target made no package (it said: $out)"; continue; }
  [ "$(dpkg-deb -f "$deb" Package)" = pimesh ] && pass "$arch: Package: pimesh" \
    || fail "$arch: Package is '$(dpkg-deb -f "$deb" Package)', expected pimesh"
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] && pass "$arch: Architecture: $arch" \
    || fail "$arch: Architecture is '$(dpkg-deb -f "$deb" Architecture)', expected $arch"
  depends="$(dpkg-deb -f "$deb" Depends)"
  grep -q 'adduser' <<<"$depends" && pass "$arch: Depends ($depends) has adduser" \
    || fail "$arch: Depends '$depends' lacks adduser, which postinst uses"
  if [ "$arch" = armhf ]; then
    grep -q 'libc6' <<<"$depends" && pass "$arch: Depends has libc6 (dynamic glibc binary)" \
      || fail "$arch: Depends '$depends' lacks libc6 for the dynamically linked armv7 binary"
  fi
  contents="$(dpkg-deb -c "$deb")"
  for path in ./usr/bin/pimesh ./usr/lib/systemd/system/pimesh.service ./etc/pimesh/pimesh.toml; do
    grep -q " $path\$" <<<"$contents" && pass "$arch: contains $path" \
      || fail "$arch: $path missing from the package; it holds: $contents"
  done
  grep -q -- '-rwxr-xr-x .* ./usr/bin/pimesh$' <<<"$contents" && pass "$arch: /usr/bin/pimesh is 0755" \
    || fail "$arch: /usr/bin/pimesh is not mode 0755"
  control="$work/control-$arch"
  dpkg-deb -e "$deb" "$control"
  grep -qx /etc/pimesh/pimesh.toml "$control/conffiles" && pass "$arch: /etc/pimesh/pimesh.toml is a conffile" \
    || fail "$arch: /etc/pimesh/pimesh.toml is not listed in conffiles"
  for script in postinst postrm prerm; do
    [ -x "$control/$script" ] && pass "$arch: maintainer script $script present" \
      || fail "$arch: maintainer script $script missing"
  done
  grep -q 'adduser --quiet pimesh gpio' "$control/postinst" && grep -q 'deb-systemd-helper enable pimesh.service' "$control/postinst" \
    && pass "$arch: postinst creates the user and enables the service" \
    || fail "$arch: postinst lacks adduser pimesh gpio or deb-systemd-helper enable"
  grep -q 'rm -rf /var/lib/pimesh' "$control/postrm" && pass "$arch: postrm deletes the data dir (on purge)" \
    || fail "$arch: postrm never deletes /var/lib/pimesh"
  [ "$arch" = arm64 ] && deb_arm64="$deb"
done

# A real install, remove and purge of the arm64 package on this machine: the maintainer scripts
# are architecture-independent shell, only the binary is not run. Needs root and no pimesh
# package or user already here, since it adds (and leaves, as Debian does) the user pimesh.
if [ "$(id -u)" -ne 0 ] || dpkg-query -W pimesh >/dev/null 2>&1 || [ -e /var/lib/pimesh ] || [ -z "${deb_arm64:-}" ]; then
  echo "skipping the install/remove/purge check: needs root, a built arm64 .deb, and no pimesh installed"
else
  if dpkg --force-architecture -i "$deb_arm64" >"$work/dpkg.log" 2>&1; then
    pass "arm64 .deb installs (dpkg --force-architecture)"
    groups="$(id -nG pimesh | tr ' ' '\n')"
    grep -qx gpio <<<"$groups" && grep -qx dialout <<<"$groups" \
      && pass "user pimesh exists in groups gpio and dialout" \
      || fail "user pimesh is not in gpio and dialout: $(id pimesh 2>&1)"
    [ "$(stat -c '%U:%G %a' /etc/pimesh/pimesh.toml)" = "root:pimesh 640" ] \
      && pass "/etc/pimesh/pimesh.toml is root:pimesh 0640" \
      || fail "/etc/pimesh/pimesh.toml is $(stat -c '%U:%G %a' /etc/pimesh/pimesh.toml), expected root:pimesh 640"
    [ -L /etc/systemd/system/multi-user.target.wants/pimesh.service ] && pass "pimesh.service is enabled" \
      || fail "pimesh.service is not enabled (no multi-user.target.wants link)"
    mkdir -p /var/lib/pimesh && echo "ship-test" >/var/lib/pimesh/instance-id
    dpkg -r pimesh >>"$work/dpkg.log" 2>&1 || fail "dpkg -r pimesh failed: $(tail -n 5 "$work/dpkg.log")"
    [ -f /var/lib/pimesh/instance-id ] && [ -f /etc/pimesh/pimesh.toml ] && [ ! -e /usr/bin/pimesh ] \
      && pass "remove: binary gone, data dir and config kept" \
      || fail "remove: expected /usr/bin/pimesh gone and /var/lib/pimesh, /etc/pimesh/pimesh.toml kept"
    dpkg -P pimesh >>"$work/dpkg.log" 2>&1 || fail "dpkg -P pimesh failed: $(tail -n 5 "$work/dpkg.log")"
    [ ! -e /var/lib/pimesh ] && [ ! -e /etc/pimesh ] && pass "purge: data dir and config deleted" \
      || fail "purge: /var/lib/pimesh or /etc/pimesh still there"
  else
    fail "dpkg -i of the arm64 package failed: $(tail -n 10 "$work/dpkg.log")"
  fi
fi

# --- 5. deploy dry run ------------------------------------------------------------------------
step "5. deploy dry run"
out="$(bash cross/deploy.sh --dry-run pi@kitchen.local 2>&1)" || fail "deploy.sh --dry-run exited non-zero: $out"
echo "$out"
expect_line() {
  grep -qF -- "$1" <<<"$out" && pass "dry run prints: $1" || fail "dry run lacks a command with: $1"
}
expect_line "+ scp "
expect_line "release/pimesh $repo/cross/pimesh.service $repo/cross/pimesh.example.toml pi@kitchen.local:pimesh-deploy/"
expect_line "+ ssh pi@kitchen.local pimesh-deploy/pimesh --version"
expect_line "useradd --system"
expect_line "usermod --append --groups gpio,dialout pimesh"
expect_line "pimesh check --config /etc/pimesh/pimesh.toml"
expect_line "+ ssh pi@kitchen.local sudo -n mv -f /usr/bin/pimesh.new /usr/bin/pimesh"
expect_line "+ ssh pi@kitchen.local sudo -n install -m 0644 pimesh-deploy/pimesh.service /etc/systemd/system/pimesh.service"
expect_line "+ ssh pi@kitchen.local sudo -n systemctl daemon-reload"
expect_line "+ ssh pi@kitchen.local sudo -n systemctl enable pimesh.service"
expect_line "+ ssh pi@kitchen.local sudo -n systemctl restart pimesh.service"
expect_line "+ ssh pi@kitchen.local sudo -n pimesh get"
# The data dir is the instance: no command of a deploy may touch it.
grep -q '/var/lib/pimesh' <<<"$(grep -v useradd <<<"$out")" \
  && fail "the dry run touches /var/lib/pimesh outside useradd's --home-dir" \
  || pass "the deploy never touches the data dir"
# An existing config is kept unless --config replaces it.
grep -qF "[ -e /etc/pimesh/pimesh.toml ] || install" <<<"$out" \
  && pass "without --config an existing /etc/pimesh/pimesh.toml is kept" \
  || fail "without --config the deploy may overwrite /etc/pimesh/pimesh.toml"
printf '[board]\nmodel = "pi4b"\n' >"$work/kitchen.toml"
out="$(bash cross/deploy.sh --dry-run --config "$work/kitchen.toml" --target "$armv7" root@hall.local 2>&1)" \
  || fail "deploy.sh --dry-run --config exited non-zero: $out"
expect_line "$work/kitchen.toml root@hall.local:pimesh-deploy/pimesh.toml"
expect_line "$armv7/release/pimesh"
expect_line "+ ssh root@hall.local install -m 0640 -o root -g pimesh pimesh-deploy/pimesh.toml /etc/pimesh/pimesh.toml"
if bash cross/deploy.sh --dry-run >/dev/null 2>&1; then
  fail "deploy.sh without a Pi should exit 2"
else
  pass "deploy.sh without a Pi refuses to run"
fi

echo
echo "ship: $passes passed, $failures failed"
[ "$failures" -eq 0 ]

#!/usr/bin/env bash
# vmvault against restic and borg on the disk image of issue 6, step by step, in one run.
#
#   scripts/bench-peers.sh [--dir DIR] [--size-mib N] [--reps N] [--cache hot|cold] [--keep]
#
# The image (benches/support/image.rs, made by `cargo bench --bench bench_image`): a raw file
# of N MiB (default 2048) in 4 MiB extents, 40 % never-written holes, 30 % text-like data,
# 30 % random data, shuffled; "1 % changed" then writes 20 random 1 MiB blocks into it. Every
# byte is a function of the size and the seeds, so every run measures the same bytes.
#
# Steps, each run by vmvault, restic and borg in turn on the same image state:
#   initial backup · 1 % changed (no changed-block tracking: a plain raw file) · unchanged ·
#   restore (checked with cmp against the image; holes counted) — then, vmvault only:
#   verify, and backups with changed-block tracking from the simulator (1 % of a day's
#   changes on a 2 GiB and a 100 GiB disk holding the same data).
# vmvault runs through its real CLI (release build) on an `images` source vault:
#   discover / register / protect once, then `vmvault backup` and `vmvault restore`, timed.
# restic: default settings (repository v2, compression auto), no password prompt.
# borg: `borg init -e none`, `borg create --compression zstd,3`, `borg extract --sparse`.
#
# Measured: wall time, CPU time (user + system) and peak RSS with /usr/bin/time; MB/s = disk
# capacity / wall time; stored = growth of the repository folder (du -sb); ratio = peer wall
# time / vmvault's (and vmvault's growth / the peer's). On a shared machine the CPU column
# is the steadier one. A second vmvault vault, identical but for compression_level = 1,
# runs the initial backup too, to show what the compression level trades; a third, identical
# but for encryption = "none", runs every backup and the restore, to show what
# encryption costs (the first two are encrypted, as every new vault is by default); and
# `zstd -3 -T<cores>` compressing the image to /dev/null is the compression limit.
# Page cache (--cache): "hot" (default) reads each step's input once before it is timed (the
# image before a backup, the whole repository before a restore), for every tool; "cold"
# drops them from the cache instead (fadvise DONTNEED on each input file). Restores are
# timed until the image is durable: vmvault fsyncs it itself, restic and borg are followed
# by `sync FILE` inside the timing. With --reps N every step runs N times (fresh repositories
# each round) and the table shows medians.
set -euo pipefail

root="${VMVAULT_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}"
dir="${TMPDIR:-/tmp}/vmvault-peers"
size_mib=2048
reps=1
cache=hot
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --size-mib) size_mib="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$cache" in hot|cold) ;; *) echo "--cache must be hot or cold" >&2; exit 2 ;; esac

say() { printf '\n== %s\n' "$*" >&2; }

# ---- tools -------------------------------------------------------------------------------
need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
command -v qemu-img >/dev/null || need+=(qemu-utils)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

say "building vmvault (release) and the image tool"
(cd "$root" && cargo build --release --quiet && cargo bench --quiet --bench bench_image --no-run 2>/dev/null)
vmvault_bin="$root/target/release/vmvault"
image_tool() { (cd "$root" && cargo bench --quiet --bench bench_image -- "$@"); }

rm -rf "$dir"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
images="$dir/images"
img="$images/disk.raw"
results="$dir/results.tsv"
: >"$results"
capacity=$((size_mib * 1024 * 1024))

export RESTIC_PASSWORD=vmvault-bench RESTIC_CACHE_DIR="$dir/restic-cache"
export BORG_BASE_DIR="$dir/borg-home" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_DELETE_I_KNOW_WHAT_I_AM_DOING=YES

# ---- helpers -----------------------------------------------------------------------------
bytes_of() { du -sb "$1" | cut -f1; }

# Puts the files under $1 in the state --cache asks for.
prepare_cache() {
  if [ "$cache" = hot ]; then
    find "$1" -type f -exec cat {} + >/dev/null
  else
    find "$1" -type f -exec sync {} + 2>/dev/null || true
    find "$1" -type f -exec dd iflag=nocache count=0 status=none if={} \; 2>/dev/null || true
  fi
}

# timed REP STEP TOOL REPO CMD...: runs CMD under /usr/bin/time, appends a result line
# (rep, step, tool, wall s, peak KiB, repository growth in bytes).
timed() {
  local rep="$1" step="$2" tool="$3" repo="$4"
  shift 4
  local before after t="$dir/time.out" log="$dir/last.log"
  before=$(bytes_of "$repo")
  if ! /usr/bin/time -f "%e %M %U %S" -o "$t" "$@" >"$log" 2>&1; then
    echo "FAILED: $tool $step: $*" >&2
    cat "$log" >&2
    exit 1
  fi
  after=$(bytes_of "$repo")
  read -r wall kib usr sys <"$t"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$step" "$tool" "$wall" "$kib" "$((after - before))" \
    "$(awk -v u="$usr" -v s="$sys" 'BEGIN { print u + s }')" >>"$results"
  awk -v t="$tool" -v s="$step" -v w="$wall" -v k="$kib" -v g="$((after - before))" \
    'BEGIN { printf "   %-8s %-18s %7.2f s  %6.1f MiB peak  %+.1f MB\n", t, s, w, k / 1024, g / 1e6 }' >&2
}

# Checks a restored image against the source; records its allocated bytes.
check_restore() {
  local rep="$1" tool="$2" file="$3"
  cmp "$img" "$file" || { echo "FAILED: $tool restore differs from the image" >&2; exit 1; }
  local alloc
  alloc=$(( $(stat -c '%b * %B' "$file") ))
  printf '%s\tallocated\t%s\t%s\t0\t0\t0\n' "$rep" "$tool" "$alloc" >>"$results"
  printf '   %-8s restore equals the image (cmp); %d MiB allocated of %d MiB\n' "$tool" \
    $((alloc / 1048576)) "$size_mib" >&2
}

vm() { "$vmvault_bin" --config "$dir/vmvault.toml" --data-dir "$dir/vmvault-data" "$@"; }

# ---- one round ---------------------------------------------------------------------------
round() {
  local rep="$1" vault="$dir/vmvault-data/vaults/bench" rrepo="$dir/restic-repo" brepo="$dir/borg-repo"
  say "round $rep: making the image ($size_mib MiB)"
  rm -rf "$images" "$dir/vmvault-data" "$rrepo" "$brepo" "$dir/restore" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR"
  mkdir -p "$images" "$dir/restore"
  image_tool make "$img" "$size_mib" >&2

  # "bench" has the default settings (encrypted); "bench-zstd1" differs only by
  # compression_level = 1 and runs the initial backup only, to show what the level trades;
  # "bench-plain" differs only by encryption = "none" (every backup, and the restore).
  cat >"$dir/vmvault.toml" <<EOF
[[vault]]
name = "bench"
region = "lab-1"
source = { kind = "images", path = "$images", region = "lab-1" }

[[vault]]
name = "bench-zstd1"
region = "lab-1"
compression_level = 1
source = { kind = "images", path = "$images", region = "lab-1" }

[[vault]]
name = "bench-plain"
region = "lab-1"
encryption = "none"
source = { kind = "images", path = "$images", region = "lab-1" }
EOF
  local v
  for v in bench bench-zstd1 bench-plain; do
    vm --vault "$v" discover >/dev/null
    vm --vault "$v" register disk >/dev/null
    vm --vault "$v" protect disk --policy DefaultPolicy >/dev/null
  done
  restic init -q --repo "$rrepo" >/dev/null
  borg init -e none "$brepo" >/dev/null 2>&1

  local step n=0
  for step in "initial backup" "1% changed" "unchanged"; do
    say "round $rep: $step"
    [ "$step" = "1% changed" ] && image_tool overwrite "$img" 7 >&2
    n=$((n + 1))
    prepare_cache "$images"
    timed "$rep" "$step" vmvault "$vault" "$vmvault_bin" --config "$dir/vmvault.toml" \
      --data-dir "$dir/vmvault-data" backup disk --json
    if [ "$step" = "initial backup" ]; then
      prepare_cache "$images"
      timed "$rep" "$step" "vmvault, zstd 1" "$dir/vmvault-data/vaults/bench-zstd1" "$vmvault_bin" \
        --config "$dir/vmvault.toml" --data-dir "$dir/vmvault-data" --vault bench-zstd1 backup disk --json
      prepare_cache "$images"
      timed "$rep" "$step" "zstd -3 -T$(nproc) (reference)" "$dir/restore" \
        bash -c 'zstd -3 -T0 -q -c "$1" >/dev/null' _ "$img"
    fi
    prepare_cache "$images"
    timed "$rep" "$step" "vmvault, no encryption" "$dir/vmvault-data/vaults/bench-plain" "$vmvault_bin" \
      --config "$dir/vmvault.toml" --data-dir "$dir/vmvault-data" --vault bench-plain backup disk --json
    prepare_cache "$images"
    timed "$rep" "$step" restic "$rrepo" restic -q --repo "$rrepo" backup --host bench "$img"
    prepare_cache "$images"
    timed "$rep" "$step" borg "$brepo" borg create --compression zstd,3 "$brepo::a$n" "$img"
  done

  say "round $rep: restore"
  local point
  point=$(vm points disk --json | python3 -c 'import json,sys; print(max(json.load(sys.stdin), key=lambda p: p["time"])["id"])')
  prepare_cache "$vault"
  timed "$rep" restore vmvault "$dir/restore" "$vmvault_bin" --config "$dir/vmvault.toml" \
    --data-dir "$dir/vmvault-data" restore disk --point "$point" --to "$dir/restore/vmvault"
  check_restore "$rep" vmvault "$dir/restore/vmvault/disk-disk0.raw"
  rm -rf "$dir/restore/vmvault"

  local plain_point
  plain_point=$(vm --vault bench-plain points disk --json | python3 -c 'import json,sys; print(max(json.load(sys.stdin), key=lambda p: p["time"])["id"])')
  prepare_cache "$dir/vmvault-data/vaults/bench-plain"
  timed "$rep" restore "vmvault, no encryption" "$dir/restore" "$vmvault_bin" --config "$dir/vmvault.toml" \
    --data-dir "$dir/vmvault-data" --vault bench-plain restore disk --point "$plain_point" --to "$dir/restore/plain"
  check_restore "$rep" "vmvault, no encryption" "$dir/restore/plain/disk-disk0.raw"
  rm -rf "$dir/restore/plain"

  prepare_cache "$rrepo"
  timed "$rep" restore restic "$dir/restore" bash -c \
    'restic -q --repo "$1" restore latest --target "$2" && sync "$2$3"' _ "$rrepo" "$dir/restore/restic" "$img"
  check_restore "$rep" restic "$dir/restore/restic$img"
  rm -rf "$dir/restore/restic"

  prepare_cache "$brepo"
  mkdir -p "$dir/restore/borg"
  timed "$rep" restore borg "$dir/restore" bash -c \
    'cd "$2" && borg extract --sparse "$1::a3" && sync "$2$3"' _ "$brepo" "$dir/restore/borg" "$img"
  check_restore "$rep" borg "$dir/restore/borg$img"
  rm -rf "$dir/restore/borg"

  say "round $rep: verify (vmvault)"
  prepare_cache "$vault"
  timed "$rep" verify vmvault "$vault" "$vmvault_bin" --config "$dir/vmvault.toml" \
    --data-dir "$dir/vmvault-data" verify
}

# ---- changed-block tracking: the simulator -------------------------------------------
# Two simulated VMs holding the same ~60 % of 2 GiB of data, one on a 2 GiB disk and one on
# a 100 GiB disk, changing 1 % a day. After the initial backup, `sim advance 1d` runs the
# scheduled backup of the next day (timed: the whole command), which reads only the changed
# extents.
cbt_round() {
  local rep="$1" capacity_gib
  for capacity_gib in 2 100; do
    local d="$dir/sim-$capacity_gib" name="cbt${capacity_gib}g"
    rm -rf "$d"
    mkdir -p "$d"
    cat >"$d/subscription.toml" <<EOF
name = "bench"
seed = 6
origin = "2025-01-01"
daily_change_percent = 1.0
[[vm]]
name = "$name"
cloud_service = "bench"
region = "westeurope"
os = "Linux"
size = "Standard_D2s_v3"
power_state = "Running"
disks = [ { capacity_gib = $capacity_gib, allocated_mib = 1228, content = "files" } ]
EOF
    cat >"$d/vmvault.toml" <<EOF
[[vault]]
name = "sim"
region = "westeurope"
source = { kind = "simulated", subscription = "$d/subscription.toml", discovery_latency_ms = 0, registration_latency_ms = 0, snapshot_latency_ms = 0 }
EOF
    local s=("$vmvault_bin" --config "$d/vmvault.toml" --data-dir "$d/data")
    "${s[@]}" discover >/dev/null
    "${s[@]}" register "$name" >/dev/null
    "${s[@]}" protect "$name" --policy DefaultPolicy >/dev/null
    "${s[@]}" backup "$name" >/dev/null
    # The first advance reaches today's scheduled backup (nothing changed yet that day);
    # the timed one runs tomorrow's, after a day of changes.
    "${s[@]}" sim advance 1d >/dev/null
    timed "$rep" "CBT ${capacity_gib} GiB disk" vmvault "$d/data" "${s[@]}" sim advance 1d
    local read
    read=$("${s[@]}" jobs --operation Backup --json | python3 -c \
      'import json,sys; j=json.load(sys.stdin); print(max(j, key=lambda x: x["start_time"])["details"].get("bytes_read", 0))')
    printf '%s\tcbt-read\t%s\t%s\t0\t0\t0\n' "$rep" "CBT ${capacity_gib} GiB disk" "$read" >>"$results"
  done
}

for rep in $(seq 1 "$reps"); do
  round "$rep"
  say "round $rep: changed-block tracking (simulator)"
  cbt_round "$rep"
done

# ---- the table ---------------------------------------------------------------------------
say "machine"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
disk=$(df -P "$dir" | awk 'NR==2 {print $1}')
{
  echo "CPU: $cpu, $(nproc) cores; $(free -g | awk '/Mem:/ {print $2}') GiB RAM; kernel $(uname -r)"
  echo "storage: $disk ($(df -PT "$dir" | awk 'NR==2 {print $2}')) for image and repositories"
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "restic $(restic version | awk '{print $2}'), $(borg --version), vmvault $(git -C "$root" rev-parse --short HEAD)"
  echo "image: $size_mib MiB, cache: $cache, rounds: $reps (medians)"
} >&2
python3 - "$results" "$capacity" <<'EOF'
import sys, statistics
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
cap = int(sys.argv[2])
wall, kib, grow, cpu, extra = (defaultdict(list) for _ in range(5))
order = []
for rep, step, tool, w, k, g, c in rows:
    if step in ("allocated", "cbt-read"):
        extra[(step, tool)].append(float(w))
        continue
    key = (step, tool)
    if key not in order:
        order.append(key)
    wall[key].append(float(w)); kib[key].append(float(k)); grow[key].append(float(g))
    cpu[key].append(float(c))
med = statistics.median
print(f"\n| step | tool | wall s | CPU s | MB/s | peak RSS MiB | stored MB | vmvault is |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for step, tool in order:
    key = (step, tool)
    w, g = med(wall[key]), med(grow[key])
    ratio = ""
    vm = (step, "vmvault")
    if not tool.startswith("vmvault") and vm in wall:
        vw, vg = med(wall[vm]), med(grow[vm])
        ratio = f"{w / vw:.1f}× faster"
        if step != "restore" and g > 1e6:
            ratio += f", stores {vg / g:.2f}×"
    stored = f"{g / 1e6:.1f}" if step not in ("restore", "verify") else "–"
    note = ""
    if step == "restore" and ("allocated", tool) in extra:
        note = f" (sparse: {med(extra[('allocated', tool)]) / 2**20:.0f} MiB allocated)"
    if step.startswith("CBT") and ("cbt-read", step) in extra:
        note = f" ({med(extra[('cbt-read', step)]) / 1e6:.1f} MB read)"
    rate = "–" if step.startswith("CBT") else f"{cap / 1e6 / w:.0f}"
    print(f"| {step}{note} | {tool} | {w:.2f} | {med(cpu[key]):.2f} | {rate} | {med(kib[key]) / 1024:.1f} | {stored} | {ratio} |")
EOF

if [ "$keep" = 0 ]; then
  rm -rf "$dir"
else
  echo "kept $dir (results.tsv has every measurement)" >&2
fi

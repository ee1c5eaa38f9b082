# Sourced by gpu_check.sh and gpu_profile.sh, after they set $log:
# `step NAME SECONDS COMMAND...` runs COMMAND under a time limit, appends its output to $log,
# and counts a non-zero exit (a timeout included) in $failed.
failed=0
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%T), at most ${limit}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$log"
  [ $rc -eq 0 ] || failed=$((failed + 1))
}

# Sourced by gpu_check.sh and gpu_profile.sh, after they set $out and $log:
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

# The weights that a GPU machine is handed beside the tree (weights/vgg16_imagenet.h5) are used through a user
# cache of the run's own, since scratchcap looks for them in $SCRATCHCAP_HOME, not under the current folder.
if [ -z "${SCRATCHCAP_HOME:-}" ] && [ -f weights/vgg16_imagenet.h5 ]; then
  export SCRATCHCAP_HOME="$out/scratchcap-home"
  mkdir -p "$SCRATCHCAP_HOME/weights"
  ln -sf "$PWD/weights/vgg16_imagenet.h5" "$SCRATCHCAP_HOME/weights/vgg16_imagenet.h5"
fi

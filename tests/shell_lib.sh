# Sourced by the shell tests: a temporary directory removed at exit (with any process still
# running from it), mpirun as root may use it, and ok/bad lines with a failure count.
tmp="$(mktemp -d)"
cleanup() { pkill -KILL -f "$tmp/" 2> /dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
mpi=(mpirun --oversubscribe --allow-run-as-root)
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

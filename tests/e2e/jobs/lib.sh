# Shared by the L2 jobs (sourced: `. "$E2E_JOBS/lib.sh"`).

# Polls a command until it succeeds, for at most $1 seconds: waits for the
# event itself, not a guessed delay (emulated L2 hosts are slow).
until_ok() {
    secs=$1
    shift
    end=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.2
    done
}
gone() { ! kill -0 "$1" 2>/dev/null; }

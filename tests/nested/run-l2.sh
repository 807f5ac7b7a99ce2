#!/usr/bin/env bash
# Runs a job script inside the nested-KVM "L2 host" (QEMU TCG with emulated AMD
# SVM, Debian's generic 6.1 kernel, a real /dev/kvm) and collects its results.
#
# Usage: run-l2.sh JOB_SCRIPT OUT_DIR [options]
#   --timeout SECS     limit for one QEMU run (default ${MVM_L2_TIMEOUT:-900})
#   --path DIR         put DIR (an L1 path) in front of the job's PATH; repeatable
#   --env NAME=VALUE   export NAME=VALUE to the job; repeatable
#   --cwd DIR          job's working directory (default /)
#   --mem MB           L2 memory (default 4096)
#   --smp N            L2 vCPUs (default 1: -smp 2 froze L2 once in five runs)
#   --append ARGS      extra L2 kernel command line arguments
#   --no-retry         do not retry when L2 hangs or fails to start
#
# The job runs as root in a chroot of L1's root (read-only under a tmpfs
# overlay, so every L1 path is there and writes vanish), with HOME=/root,
# MVM_OUT=/out (= OUT_DIR, read-write), MVM_L2=1, stdin /dev/null.
# OUT_DIR gets: job.log (job stdout+stderr), job.status (its exit status),
# l2-console.log (L2 serial console), l2-qemu.log (QEMU's stderr),
# l2-attempts.txt (one line per QEMU run), l2-result (key=value summary),
# l2-freeze.txt when L2 stopped running mid-job (QEMU's CPU idle for
# MVM_L2_FREEZE_SECS, default 240: its registers, LAPIC and PIC through
# QMP, then one NMI to wake it), l2-monitor.log (L2's watch of itself on
# its second serial port: memory, load, blocked tasks every 30 s, every
# task every 5 minutes), l2-stuck.txt when a job was stopped unfinished
# (L2's registers; the kernel's blocked tasks then reach the console),
# plus whatever the job writes to $MVM_OUT.
# OUT_DIR must be empty or a previous run-l2.sh OUT_DIR (which is then
# wiped).
#
# A job whose console has not grown for MVM_L2_QUIET_SECS (default 900; 0:
# never) is stuck: L2 is stopped then, not at the timeout, and the job
# retried. A retry starts from a wiped OUT_DIR except for the entries the
# job named in $MVM_OUT/l2-keep (one name per line, entries directly in
# OUT_DIR): a job made of parts keeps the finished ones there and skips them
# on the retry.
#
# Exit status: the job's own exit status when it finished; 124 when L2 hung
# (no "job exit" marker before the timeout) on both attempts, or once when
# the job was still writing to the console near the timeout (slow, not
# stuck: not retried, as a retry would take as long); 125 when L2
# failed to start the job or died during it; 2 for bad usage.
# Environment: MVM_L2_VERBOSE=1 copies the L2 console to stderr live;
# MVM_CACHE_DIR / XDG_CACHE_HOME move the cache (see prepare-l2.sh).
set -euo pipefail
LOG_PREFIX=run-l2
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
bad() { log "error: $*"; exit 2; }

JOB='' OUT='' TIMEOUT="${MVM_L2_TIMEOUT:-900}" CWD=/ MEM=4096 SMP=1 APPEND='' RETRY=1
FREEZE_SECS="${MVM_L2_FREEZE_SECS:-240}"
# A job whose console grew within this many seconds of the timeout is
# slow, not stuck, and is not retried (MVM_L2_PROGRESS_SECS).
PROGRESS_SECS="${MVM_L2_PROGRESS_SECS:-600}"
QUIET_LIMIT="${MVM_L2_QUIET_SECS:-900}"
[[ "$QUIET_LIMIT" =~ ^[0-9]+$ ]] || bad "MVM_L2_QUIET_SECS must be a number of seconds, not '$QUIET_LIMIT'"
XPATHS=() ENVS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) TIMEOUT="${2:?--timeout needs SECS}"; shift 2 ;;
        --timeout=*) TIMEOUT="${1#*=}"; shift ;;
        --path) XPATHS+=("${2:?--path needs DIR}"); shift 2 ;;
        --env) ENVS+=("${2:?--env needs NAME=VALUE}"); shift 2 ;;
        --cwd) CWD="${2:?--cwd needs DIR}"; shift 2 ;;
        --mem) MEM="${2:?--mem needs MB}"; shift 2 ;;
        --smp) SMP="${2:?--smp needs N}"; shift 2 ;;
        --append) APPEND="${2?--append needs ARGS}"; shift 2 ;;
        --no-retry) RETRY=0; shift ;;
        -h|--help) usage ;;
        -*) bad "unknown option: $1" ;;
        *)
            if [ -z "$JOB" ]; then JOB="$1"
            elif [ -z "$OUT" ]; then OUT="$1"
            else bad "unexpected argument: $1"
            fi
            shift ;;
    esac
done
[ -n "$JOB" ] && [ -n "$OUT" ] || usage
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || bad "--timeout must be a positive number of seconds, not '$TIMEOUT'"
[[ "$MEM" =~ ^[1-9][0-9]*$ ]] || bad "--mem must be a number of MB, not '$MEM'"
[[ "$SMP" =~ ^[1-9][0-9]*$ ]] || bad "--smp must be a positive number, not '$SMP'"

# Paths reach L2 through a file in OUT_DIR (l2-job.conf), not the kernel
# command line: spaces are fine, line breaks are not.
one_line() { case "$2" in *$'\n'*) bad "$1 must be one line: '$2'" ;; esac; }

[ -f "$JOB" ] || bad "job script not found: $JOB"
JOB="$(realpath "$JOB")"
one_line "the job path" "$JOB"
case "$CWD" in /*) ;; *) bad "--cwd must be absolute: $CWD" ;; esac
one_line "--cwd" "$CWD"
XPATH=
for p in ${XPATHS[@]+"${XPATHS[@]}"}; do
    case "$p" in /*) ;; *) p="$(realpath -m "$p")" ;; esac
    one_line "--path" "$p"
    case "$p" in *:*) bad "--path must not contain ':': $p" ;; esac
    XPATH="${XPATH:+$XPATH:}$p"
done
for e in ${ENVS[@]+"${ENVS[@]}"}; do
    [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || bad "--env wants NAME=VALUE, not '$e'"
    case "$e" in *$'\n'*) bad "--env values must be one line: ${e%%=*}" ;; esac
done

mkdir -p "$OUT"
OUT="$(realpath "$OUT")"
case "$OUT" in /) bad "OUT_DIR must not be /" ;; esac
case "$JOB" in "$OUT"/*) bad "the job must not live inside OUT_DIR (it is wiped between attempts): $JOB" ;; esac
if [ -n "$(ls -A "$OUT")" ] && [ ! -e "$OUT/.mvm-l2-out" ]; then
    bad "OUT_DIR $OUT is not empty and not a previous run-l2.sh output folder; give an empty or new folder"
fi

command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86
L2ENV="$("$NESTED_DIR/prepare-l2.sh")" || { log "error: prepare-l2.sh failed"; exit 125; }
eval "$L2ENV"
: "${MVM_L2_KERNEL:?}" "${MVM_L2_INITRD:?}" "${MVM_L2_KMODS:?}"

# --- OUT_DIR handling -------------------------------------------------------------
wipe_out() {   # everything but the files named in $@ (relative names)
    local f keep k
    shopt -s dotglob nullglob
    for f in "$OUT"/*; do
        keep=0
        for k in "$@"; do [ "${f##*/}" = "$k" ] && keep=1; done
        [ "$keep" = 1 ] || rm -rf -- "$f"
    done
    shopt -u dotglob nullglob
}
write_job_env() {
    local e name val
    : >"$OUT/l2-job.env"
    for e in ${ENVS[@]+"${ENVS[@]}"}; do
        name="${e%%=*}"; val="${e#*=}"
        printf "%s='%s'\n" "$name" "${val//\'/\'\\\'\'}" >>"$OUT/l2-job.env"
    done
}
# What L2's init reads from /out before it starts the job: key=value lines.
write_job_conf() {
    printf 'job=%s\ncwd=%s\npath=%s\nkmods=%s\n' "$JOB" "$CWD" "$XPATH" "$MVM_L2_KMODS" >"$OUT/l2-job.conf"
}
wipe_out
touch "$OUT/.mvm-l2-out"
write_job_env
write_job_conf
: >"$OUT/l2-attempts.txt"

# --- one QEMU run -------------------------------------------------------------------
CMDLINE="console=ttyS0 quiet panic=-1"
[ -n "$APPEND" ] && CMDLINE+=" $APPEND"
[ "${#CMDLINE}" -lt 2000 ] || bad "the L2 kernel command line is too long (${#CMDLINE} bytes, max ~2000)"

QPID='' TPID=''
cleanup() {
    [ -n "$TPID" ] && kill "$TPID" 2>/dev/null || true
    if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
        kill -TERM "$QPID" 2>/dev/null || true
        sleep 1
        kill -KILL "$QPID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Sets: OUTCOME (finished|hung|slow|no-start|died), JOB_RC, T_START, T_EXIT, T_END, NOTE
run_attempt() {
    local log="$OUT/l2-console.log" t0 now deadline timed_out=0 went_quiet=0 qrc=0 marker
    OUTCOME='' JOB_RC='' T_START='' T_EXIT='' NOTE='' QUIET_SECS='' STUCK_NOTE=''
    QMP="$OUT/.qmp.sock"
    rm -f "$QMP"
    t0="$EPOCHREALTIME"
    deadline=$(( ${t0%.*} + TIMEOUT ))
    : >"$log"
    qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu EPYC,+svm,+npt -smp "$SMP" -m "$MEM" \
        -nographic -no-reboot -nic none \
        -kernel "$MVM_L2_KERNEL" -initrd "$MVM_L2_INITRD" \
        -append "$CMDLINE" \
        -virtfs local,path=/,mount_tag=l1root,security_model=none,readonly=on,multidevs=remap \
        -virtfs "local,path=${OUT//,/,,},mount_tag=out,security_model=none,multidevs=remap" \
        -qmp "unix:$QMP,server=on,wait=off" \
        -serial mon:stdio -serial "file:$OUT/l2-monitor.log" \
        </dev/null >"$log" 2>"$OUT/l2-qemu.log" &
    QPID=$!
    # Freeze watch: an L2 whose emulated CPU has not run for FREEZE_SECS
    # while the job runs has stopped (its own timers stopped too, so no
    # timeout inside it fires): its state goes to l2-freeze.txt and an NMI
    # nudges it once.
    last_ticks=-1 still_since=${t0%.*} nudged=0
    # Progress watch: the console's size and when it last grew. A job
    # still writing when the timeout comes was slow, not stuck: retrying
    # it would only take as long again.
    last_size=0 grew_at=${t0%.*}
    if [ "${MVM_L2_VERBOSE:-0}" = 1 ]; then
        tail -n +1 -f --pid="$QPID" "$log" >&2 &
        TPID=$!
    fi
    while kill -0 "$QPID" 2>/dev/null; do
        now="$EPOCHREALTIME"
        if [ -z "$T_START" ] && grep -aq 'MVM-L2: job start' "$log"; then T_START="$(since "$t0" "$now")"; fi
        if [ -z "$T_EXIT" ] && grep -aq 'MVM-L2: job exit' "$log"; then T_EXIT="$(since "$t0" "$now")"; fi
        ticks=$(awk '{print $14 + $15}' "/proc/$QPID/stat" 2>/dev/null) || ticks=$last_ticks
        if [ "$ticks" != "$last_ticks" ] && [ $((ticks - last_ticks)) -gt 2 ]; then
            last_ticks=$ticks still_since=${now%.*}
        elif [ -n "$T_START" ] && [ -z "$T_EXIT" ] && [ "$nudged" = 0 ] &&
            [ $(( ${now%.*} - still_since )) -ge "$FREEZE_SECS" ]; then
            nudged=1
            {
                echo "L2 used no CPU for ${FREEZE_SECS}s while the job ran ($(since "$t0" "$now")s in):"
                python3 "$(dirname "$0")/qmp.py" "$QMP" query-status "hmp:info registers" "hmp:info lapic" "hmp:info pic" 2>&1 ||
                    echo "(QMP did not answer)"
                python3 "$(dirname "$0")/qmp.py" "$QMP" inject-nmi 2>&1 && echo "NMI injected" ||
                    echo "(no NMI: QMP did not answer)"
            } >"$OUT/l2-freeze.txt" 2>&1
            NOTE+="L2 stopped running $(( still_since - ${t0%.*} ))s in (its state and an NMI: l2-freeze.txt); "
            log "L2 stopped running for ${FREEZE_SECS}s: state in $OUT/l2-freeze.txt, NMI sent"
        fi
        size=$(stat -c %s "$log" 2>/dev/null) || size=$last_size
        if [ "$size" != "$last_size" ]; then last_size=$size grew_at=${now%.*}; fi
        if [ -n "$T_START" ] && [ -z "$T_EXIT" ] && [ "$QUIET_LIMIT" -gt 0 ] &&
            [ $(( ${now%.*} - grew_at )) -ge "$QUIET_LIMIT" ]; then
            went_quiet=1
        fi
        if [ "${now%.*}" -ge "$deadline" ] || [ "$went_quiet" = 1 ]; then
            timed_out=1
            [ -n "$T_EXIT" ] || stuck_report "$(since "$t0" "$now")"
            QUIET_SECS=$(( ${now%.*} - grew_at ))
            kill -TERM "$QPID" 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
            kill -KILL "$QPID" 2>/dev/null || true
            break
        fi
        sleep 0.25
    done
    wait "$QPID" || qrc=$?
    QPID=
    if [ -n "$TPID" ]; then wait "$TPID" 2>/dev/null || true; TPID=; fi
    T_END="$(since "$t0" "$EPOCHREALTIME")"
    QEMU_RC=$qrc
    # a marker that arrived between the last poll and the exit
    if [ -z "$T_START" ] && grep -aq 'MVM-L2: job start' "$log"; then T_START="$T_END"; fi
    marker="$(grep -aoE 'MVM-L2: job exit [0-9]+' "$log" | tail -n1 | awk '{print $4}')" || true
    if [ -n "$marker" ] && [ -z "$T_EXIT" ]; then T_EXIT="$T_END"; fi

    if [ -f "$OUT/job.status" ] && [[ "$(cat "$OUT/job.status")" =~ ^[0-9]+$ ]]; then
        OUTCOME=finished; JOB_RC="$(cat "$OUT/job.status")"
        [ -n "$marker" ] && [ "$marker" != "$JOB_RC" ] && NOTE+="console says exit $marker but job.status says $JOB_RC; "
        [ -z "$marker" ] && NOTE+="no 'job exit' marker on the console; "
    elif [ -n "$marker" ]; then
        OUTCOME=finished; JOB_RC="$marker"; NOTE+="job.status missing, status taken from the console; "
    elif [ "$timed_out" = 1 ]; then
        OUTCOME=hung
        if [ "$went_quiet" = 1 ]; then NOTE+="the job started at ${T_START}s and its console did not grow for ${QUIET_LIMIT}s (MVM_L2_QUIET_SECS): stopped at $(since "$t0" "$EPOCHREALTIME")s; "
        elif [ -n "$T_START" ]; then NOTE+="the job started at ${T_START}s but did not finish within ${TIMEOUT}s; "
        else NOTE+="L2 did not reach the job within ${TIMEOUT}s; "; fi
        if [ "$went_quiet" = 0 ] && [ -n "$T_START" ] && [ "${QUIET_SECS:-$PROGRESS_SECS}" -lt "$PROGRESS_SECS" ]; then
            OUTCOME=slow
            NOTE+="its console last grew ${QUIET_SECS}s before the timeout: slow, not stuck; "
        fi
    elif [ -n "$T_START" ]; then
        OUTCOME=died; NOTE+="QEMU exited (status $qrc) while the job was running; "
    else
        OUTCOME=no-start; NOTE+="QEMU exited (status $qrc) before the job started; "
    fi
    NOTE+="$STUCK_NOTE"
    if [ "$OUTCOME" = finished ] && [ "$timed_out" = 1 ]; then
        NOTE+="L2 did not power off after the job and was killed at the timeout; "
    fi
    if grep -aq 'MVM-L2: FATAL' "$log"; then
        NOTE+="$(grep -a 'MVM-L2: FATAL' "$log" | head -n1 | tr -d '\r'); "
    fi
    TIMED_OUT=$timed_out
}

# What a stuck L2 was doing, before it is stopped: its CPU's registers
# (l2-stuck.txt), and the kernel's stacks of its blocked tasks and of its
# CPU on its console (sysrq through the emulated keyboard; loglevel 9 first,
# as the L2 kernel runs `quiet`).
stuck_report() {
    {
        echo "the job had not finished ${1}s in; L2's state before it was stopped:"
        python3 "$(dirname "$0")/qmp.py" "$QMP" "hmp:info registers" \
            "hmp:sendkey alt-sysrq-9" "hmp:sendkey alt-sysrq-w" "hmp:sendkey alt-sysrq-l" 2>&1 ||
            echo "(QMP did not answer)"
    } >"$OUT/l2-stuck.txt" 2>&1
    sleep 10
    STUCK_NOTE="L2's registers in l2-stuck.txt, its blocked tasks (sysrq w) on its console; "
}

explain() {
    case "$1" in
        hung) echo "L2 hung" ;;
        slow) echo "the job ran out of time while still running" ;;
        no-start) echo "L2 failed to start the job" ;;
        died) echo "L2 died during the job" ;;
    esac
}

show_tail() {
    if [ "$OUTCOME" = finished ] && [ -s "$OUT/job.log" ]; then
        log "last lines of the job's output ($OUT/job.log):"
        tail -n 15 "$OUT/job.log" | sed 's/^/    | /' >&2
        return 0
    fi
    log "last lines of the L2 console ($OUT/l2-console.log):"
    tail -n 15 "$OUT/l2-console.log" | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/^/    | /' >&2
    if [ -s "$OUT/l2-monitor.log" ] && [ "$OUTCOME" != finished ]; then
        log "L2's watch, its last summaries (every 30 s; $OUT/l2-monitor.log):"
        grep -a '^up=' "$OUT/l2-monitor.log" | tail -n 4 | cut -c1-400 | sed 's/^/    | /' >&2
    fi
    # The L2 kernel's blocked tasks, asked for before the stop: CI's log may
    # be all that is left of this run.
    if [ -n "${STUCK_NOTE:-}" ] && grep -aq 'sysrq: Show Blocked State' "$OUT/l2-console.log"; then
        log "L2's blocked tasks and CPU (sysrq w, l) at the stop:"
        sed -n '/sysrq: Show Blocked State/,$p' "$OUT/l2-console.log" | tr -d '\r' | head -n 150 | sed 's/^/    | /' >&2
    fi
    local qerr
    qerr="$(grep -v 'TCG doesn.t support requested feature' "$OUT/l2-qemu.log" 2>/dev/null | tail -n 10)" || true
    if [ -n "$qerr" ] && [ "$OUTCOME" != finished ]; then
        log "QEMU stderr ($OUT/l2-qemu.log):"
        printf '%s\n' "$qerr" | sed 's/^/    | /' >&2
    fi
}

MAX=$((RETRY + 1))
attempt=1
log "running $JOB in L2 (timeout ${TIMEOUT}s, results in $OUT)"
while :; do
    run_attempt
    printf 'attempt %d: outcome=%s job_status=%s qemu_exit=%s timed_out=%s to_job_start_s=%s to_job_exit_s=%s total_s=%s%s\n' \
        "$attempt" "$OUTCOME" "${JOB_RC:--}" "$QEMU_RC" "$TIMED_OUT" "${T_START:--}" "${T_EXIT:--}" "$T_END" \
        "${NOTE:+ note: ${NOTE%; }}" >>"$OUT/l2-attempts.txt"
    if [ "$OUTCOME" = finished ]; then
        log "job finished with status $JOB_RC (attempt $attempt; L2 reached the job after ${T_START:-?}s, total ${T_END}s)"
        [ -n "$NOTE" ] && log "note: ${NOTE%; }"
        [ "$JOB_RC" = 0 ] || show_tail
        break
    fi
    log "$(explain "$OUTCOME") on attempt $attempt: ${NOTE%; }"
    show_tail
    if [ "$OUTCOME" = slow ]; then
        log "not retried: a retry would take as long (--timeout, MVM_E2E_L2_TIMEOUT)"
        break
    fi
    if [ "$attempt" -ge "$MAX" ]; then
        [ "$MAX" -gt 1 ] && log "$(explain "$OUTCOME") again on the retry: giving up"
        break
    fi
    log "$(explain "$OUTCOME") on attempt $attempt, retried"
    echo "$(explain "$OUTCOME") on attempt $attempt, retried" >>"$OUT/l2-attempts.txt"
    mv "$OUT/l2-console.log" "$OUT/l2-console.attempt$attempt.log"
    mv "$OUT/l2-qemu.log" "$OUT/l2-qemu.attempt$attempt.log"
    mv "$OUT/l2-monitor.log" "$OUT/l2-monitor.attempt$attempt.log" 2>/dev/null || true
    mv "$OUT/l2-stuck.txt" "$OUT/l2-stuck.attempt$attempt.txt" 2>/dev/null || true
    keep=(.mvm-l2-out l2-job.env l2-job.conf l2-attempts.txt)
    for ((i = 1; i <= attempt; i++)); do
        keep+=("l2-console.attempt$i.log" "l2-qemu.attempt$i.log" "l2-monitor.attempt$i.log" "l2-stuck.attempt$i.txt")
    done
    # What the job asked to keep: plain names of entries in OUT_DIR.
    if [ -f "$OUT/l2-keep" ]; then
        keep+=(l2-keep)
        kept=0
        while IFS= read -r k; do
            case "$k" in '' | . | .. | */* | .mvm-l2-out | l2-*) continue ;; esac
            keep+=("$k")
            kept=$((kept + 1))
        done <"$OUT/l2-keep"
        log "kept for the retry (l2-keep): $kept entries"
    fi
    wipe_out "${keep[@]}"
    attempt=$((attempt + 1))
done

case "$OUTCOME" in
    finished) RC="$JOB_RC" ;;
    hung | slow) RC=124 ;;
    *) RC=125 ;;
esac
{
    echo "outcome=$OUTCOME"
    echo "job_status=${JOB_RC:-}"
    echo "exit=$RC"
    echo "attempts=$attempt"
    echo "to_job_start_s=${T_START:-}"
    echo "to_job_exit_s=${T_EXIT:-}"
    echo "total_s=$T_END"
} >"$OUT/l2-result"
exit "$RC"

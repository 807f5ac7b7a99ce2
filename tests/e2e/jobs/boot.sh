#!/bin/sh
# L2 job: every boot scenario of tests/e2e/nested_boot.rs in one L2 boot.
# MVM_BIN, KERNEL and INITRD come from the harness (run-l2.sh --env); each
# scenario leaves $MVM_OUT/<name>/{status,stdout,stderr,console.log,times}.
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${INITRD:?}"

uptime_s() { cut -d' ' -f1 /proc/uptime; }

scenario() {
    name=$1
    shift
    d="$MVM_OUT/$name"
    mkdir -p "$d"
    echo "MVM-JOB: scenario $name: mvm run $*"
    start=$(uptime_s)
    timeout 120 "$MVM_BIN" run --kernel "${SCENARIO_KERNEL:-$KERNEL}" --initrd "$INITRD" \
        --console "$d/console.log" "$@" >"$d/stdout" 2>"$d/stderr"
    status=$?
    end=$(uptime_s)
    echo "$status" >"$d/status"
    echo "$start $end" >"$d/times"
    echo "MVM-JOB: scenario $name: exit $status ($start -> $end)"
}

# Two CPUs, 256 MiB, an appended argument; init prints what it sees and
# reboots.
scenario smp --cpus 2 --memory 256 --cmdline "mvmtest.token=e2e-token-42"
# One CPU and the defaults.
scenario single
# Four CPUs and more than 3 GiB: memory above the 32-bit gap.
scenario bigmem --cpus 4 --memory 3584
# No rng device: /dev/hwrng must be missing.
scenario norng --no-rng
# The guest kernel panics (init exits): non-zero status.
scenario panic --cmdline "mvmtest.action=panic"
# The guest triple-faults via reboot=t: non-zero status naming the RIP.
scenario triple --cmdline "reboot=t mvmtest.action=reboot"
# A distribution bzImage (Debian's 6.1, the L2 kernel) through the 64-bit
# boot protocol: it has no PVH note and finds its CPUs in the ACPI MADT.
if [ -n "${BZIMAGE:-}" ]; then
    SCENARIO_KERNEL="$BZIMAGE" scenario bzimage --cpus 2 --memory 512
fi
# Debian's kernel with 1 to 4 vCPUs and 256 MiB to 3.5 GiB: the probe
# reports how it found its CPUs and IO-APIC and prints its boot log; the
# L2 kernel's log of each boot (KVM's "Unhandled" MSR lines) is kept too.
# Then poweroff (ACPI S5), reboot through the ACPI reset register, and a
# panic.
distro() {
    name=$1
    shift
    before=$(dmesg | wc -l)
    SCENARIO_KERNEL="$DISTRO_KERNEL" scenario "$name" \
        --cmdline "mvmtest.run=/boot-probe.sh $DISTRO_CMDLINE" "$@"
    dmesg | tail -n +"$((before + 1))" >"$MVM_OUT/$name/l2-dmesg"
}
for kind in bz elf; do
    case $kind in
        bz) DISTRO_KERNEL="${BZIMAGE:-}" ;;
        elf) DISTRO_KERNEL="${DISTRO_ELF:-}" ;;
    esac
    [ -n "$DISTRO_KERNEL" ] || continue
    # Everything to the console: the test reads the log from there.
    DISTRO_CMDLINE="loglevel=7"
    distro "distro-$kind-1cpu" --cpus 1 --memory 256
    distro "distro-$kind-2cpu" --cpus 2 --memory 768
    distro "distro-$kind-3cpu" --cpus 3 --memory 1024
    distro "distro-$kind-4cpu" --cpus 4 --memory 3584
    DISTRO_CMDLINE="loglevel=7 mvmtest.action=poweroff"
    distro "distro-$kind-poweroff" --cpus 2 --memory 256
    DISTRO_CMDLINE="loglevel=7 reboot=a"
    distro "distro-$kind-acpi-reboot" --cpus 2 --memory 256
    DISTRO_CMDLINE="mvmtest.action=panic"
    distro "distro-$kind-panic" --cpus 1 --memory 256
done
# The reference for what L2's KVM logs about a boot of that kernel:
# Firecracker booting the ELF the same way (2 vCPUs, same initramfs).
if [ -n "${DISTRO_ELF:-}" ] && [ -x "${FIRECRACKER:-}" ]; then
    d="$MVM_OUT/distro-firecracker"
    mkdir -p "$d"
    cat >"$d/vm.json" <<EOF
{"boot-source":{"kernel_image_path":"$DISTRO_ELF","initrd_path":"$INITRD",
 "boot_args":"console=ttyS0 reboot=k panic=-1 pci=off nomodule loglevel=7 mvmtest.run=/boot-probe.sh"},
 "drives":[],"machine-config":{"vcpu_count":2,"mem_size_mib":256}}
EOF
    before=$(dmesg | wc -l)
    timeout 180 "$FIRECRACKER" --no-api --no-seccomp --level Error --config-file "$d/vm.json" \
        >"$d/console.log" 2>"$d/stderr"
    echo $? >"$d/status"
    dmesg | tail -n +"$((before + 1))" >"$d/l2-dmesg"
fi
# The console goes to stdout when asked.
d="$MVM_OUT/stdout-console"
mkdir -p "$d"
timeout 120 "$MVM_BIN" run --kernel "$KERNEL" --initrd "$INITRD" >"$d/stdout" 2>"$d/stderr"
echo $? >"$d/status"
exit 0

#!/bin/sh
# Run by guest-init.sh (mvmtest.run=/boot-probe.sh) in the boot scenarios
# of distribution kernels: how the kernel found its interrupt controllers
# and firmware, then its whole boot log between markers, for the test to
# search for warnings.
say() { echo "MVM-GUEST: $*"; }
say "ioapic_irqs=$(grep -c IO-APIC /proc/interrupts)"
if [ -d /sys/firmware/acpi/tables ]; then say "acpi=yes"; else say "acpi=no"; fi
echo "MVM-BOOTLOG-BEGIN"
dmesg
echo "MVM-BOOTLOG-END"

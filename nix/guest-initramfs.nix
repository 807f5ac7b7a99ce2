# An initramfs whose /init is mvm-init. `mvm start` writes its own (adding
# busybox when the host has one); this one is for embedding the VMM
# elsewhere (`mvm run --initrd`) and for checks.
{ makeInitrd, mvm-init }:
makeInitrd {
  name = "mvm-guest-initramfs";
  compressor = "gzip";
  contents = [
    { object = "${mvm-init}/bin/mvm-init"; symlink = "/init"; }
  ];
}

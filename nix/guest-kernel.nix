# The mvm guest kernel from nixpkgs' Linux 6.12 source, configured exactly
# as guest-kernel/build.sh does: `make tinyconfig`, then the same fragment
# file (guest-kernel/kernel.fragment) merged in, `make olddefconfig`, then
# the same check (guest-kernel/verify-config.sh) that every fragment line
# holds. Output: $out/vmlinux (an ELF with the PVH entry, all drivers built
# in, no modules) and $out/config.
{ lib, stdenv, linux_6_12, bc, bison, flex, perl, elfutils, openssl, python3, which }:
let
  fragment = ../guest-kernel/kernel.fragment;
  verify = ../guest-kernel/verify-config.sh;
  kernel = linux_6_12;
in
stdenv.mkDerivation {
  pname = "mvm-guest-kernel";
  inherit (kernel) version src;
  nativeBuildInputs = [ bc bison flex perl elfutils openssl python3 which ];
  makeFlags = [ "ARCH=x86_64" "KBUILD_BUILD_USER=mvm" "KBUILD_BUILD_HOST=mvm" ];
  postPatch = "patchShebangs scripts";
  configurePhase = ''
    runHook preConfigure
    make $makeFlags tinyconfig
    scripts/kconfig/merge_config.sh -m .config ${fragment}
    make $makeFlags olddefconfig
    bash ${verify} ${fragment} .config .
    runHook postConfigure
  '';
  buildFlags = [ "vmlinux" ];
  enableParallelBuilding = true;
  installPhase = ''
    runHook preInstall
    install -Dm644 vmlinux $out/vmlinux
    install -Dm644 .config $out/config
    runHook postInstall
  '';
  dontStrip = true;
  meta = {
    description = "Guest kernel of mvm VMs (tinyconfig + guest-kernel/kernel.fragment)";
    platforms = [ "x86_64-linux" ];
    license = lib.licenses.gpl2Only;
  };
}

# The flake's packages for one system. mvm-init is PID 1 of the guest's
# initramfs, so it is built statically (musl); mvm finds it beside itself.
{ pkgs }:
let
  mvm-init = pkgs.pkgsStatic.callPackage ./mvm-init.nix { };
  guest-kernel = pkgs.callPackage ./guest-kernel.nix { };
  mvm = pkgs.callPackage ./mvm.nix { inherit mvm-init guest-kernel; };
in
{
  inherit mvm mvm-init guest-kernel;
  guest-initramfs = pkgs.callPackage ./guest-initramfs.nix { inherit mvm-init; };
  default = mvm;
}

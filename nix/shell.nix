# `nix develop`: what tests/run.sh and guest-kernel/build.sh need.
{ pkgs }:
pkgs.mkShell {
  packages = with pkgs; [
    cargo rustc clippy rustfmt
    qemu iproute2 nftables busybox python3 git
    # guest-kernel/build.sh outside Nix
    gnumake gcc bc flex bison elfutils openssl pkg-config
  ];
}

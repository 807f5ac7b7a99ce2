# The guest agent (guest-kernel/mvm-init), PID 1 of every managed VM.
# Called with pkgsStatic: a static binary, as the initramfs has no libraries.
{ lib, rustPlatform }:
rustPlatform.buildRustPackage {
  pname = "mvm-init";
  version = (lib.importTOML ../guest-kernel/mvm-init/Cargo.toml).package.version;
  src = import ./source.nix { inherit lib; };
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "mvm-init" ];
  doCheck = false;
  meta.mainProgram = "mvm-init";
}

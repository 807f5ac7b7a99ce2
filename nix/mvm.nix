# The `mvm` command (cli/), with the guest agent beside it and the Nix-built
# guest kernel as its default kernel ($MVM_KERNEL, which --kernel and a
# VM's own kernel still override).
{ lib, rustPlatform, makeWrapper, mvm-init, guest-kernel }:
rustPlatform.buildRustPackage {
  pname = "mvm";
  version = (lib.importTOML ../cli/Cargo.toml).package.version;
  src = import ./source.nix { inherit lib; };
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "mvm" ];
  # The tests need /dev/kvm, taps and root (tests/run.sh runs them).
  doCheck = false;
  nativeBuildInputs = [ makeWrapper ];
  postInstall = ''
    ln -s ${mvm-init}/bin/mvm-init $out/bin/mvm-init
    wrapProgram $out/bin/mvm --set-default MVM_KERNEL ${guest-kernel}/vmlinux
  '';
  meta = {
    description = "Per-project Linux microVMs for developers";
    mainProgram = "mvm";
    platforms = [ "x86_64-linux" ];
    license = lib.licenses.asl20;
  };
}

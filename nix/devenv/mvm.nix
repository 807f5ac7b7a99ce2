# devenv module: `mvm.enable = true;` runs the project in an mvm VM.
#
#   # devenv.yaml
#   inputs:
#     mvm:
#       url: github:OWNER/mvm   # this repository
#   imports:
#     - mvm/nix/devenv        # devenv.nix here; flake users: devenvModules.mvm
#   # devenv.nix
#   { mvm.enable = true; mvm.config.ports = [ "8000:8000" ]; }
#
# It writes the project's mvm.toml from `mvm.config` (exactly mvm.toml's
# keys, generated from mvm's config schema) and turns devenv's `processes`
# into the VM's supervised services (unless mvm.config.services is set);
# `mvm up` then starts the VM, and with `mvm.autostart` entering the devenv
# shell on the host does it. The host's /nix/store is shared read-only
# with the guest, so the processes' store paths run there unchanged.
{ self }:
{ config, lib, pkgs, ... }:
let
  cfg = config.mvm;
  schemaOptions = import ../lib/options.nix { inherit lib; };
  processServices = lib.mapAttrs (_: p: { command = p.exec; }) (config.processes or { });
  settings = schemaOptions.toConfig cfg.config
    // lib.optionalAttrs (cfg.config.services == null && processServices != { }) {
      services = processServices;
    };
in
{
  options.mvm = {
    enable = lib.mkEnableOption "running this project in an mvm VM";
    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.mvm;
      defaultText = lib.literalExpression "mvm.packages.\${system}.mvm";
      description = "The mvm package.";
    };
    config = lib.mkOption {
      type = lib.types.submodule { options = schemaOptions.configOptions; };
      default = { };
      description = "The project's mvm.toml (see `mvm config --schema`).";
    };
    autostart = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Start (or reuse) the VM when the devenv shell is entered.";
    };
  };

  config = lib.mkIf cfg.enable {
    packages = [ cfg.package ];
    files."mvm.toml".toml = settings;
    enterShell = lib.mkIf cfg.autostart ''
      mvm up || echo "mvm: the project VM did not start (mvm up)" >&2
    '';
  };
}

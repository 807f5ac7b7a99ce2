# The NixOS host module and the devenv module evaluated by the module
# system (nixpkgs' lib.evalModules), without nixpkgs itself: the NixOS and
# devenv options they set are declared by stubs.nix with their real types,
# so a wrong value, in the modules or in a configuration, is an evaluation
# error. cli/tests/nix.rs runs it:
#
#   nix-instantiate --eval --strict --json --read-write-mode --store DIR \
#     nix/tests/eval.nix --arg nixpkgsLib ../shared/nix/nixpkgs-lib \
#     [--argstr module devenv] [--arg configuration ./my.nix] [--arg extra '{ ... }']
#
# (--store DIR: builtins.toFile, the stand-in for pkgs.formats.toml, writes
# the VMs' mvm.toml into DIR/nix/store rather than /nix/store.)
# Output: the parts of the evaluated configuration the modules produce.
{
  # A checkout of nixpkgs' lib (nix-community/nixpkgs.lib): the folder
  # holding lib/, as a path (--arg) or an absolute path string (--argstr).
  nixpkgsLib,
  # "host" (modules/host.nix) or "devenv" (devenv/devenv.nix, as devenv.yaml imports it).
  module ? "host",
  # The configuration module; default: the example host's, or devenv-example.nix.
  configuration ? null,
  # One more module, e.g. a wrong value the test expects to be refused.
  extra ? { },
  # The mvm package's out path (the stand-in derivation's); its bin/mvm is the units' mvm.
  mvmOutPath ? "/nix/store/00000000000000000000000000000000-mvm-0.1.0",
}:
let
  lib = import (
    if builtins.isPath nixpkgsLib then nixpkgsLib + "/lib"
    else if builtins.substring 0 1 nixpkgsLib == "/" then /. + "${nixpkgsLib}/lib"
    else throw "eval.nix: nixpkgsLib must be an absolute path (--argstr) or a path (--arg): ${nixpkgsLib}");
  stubs = import ./stubs.nix { inherit lib mvmOutPath; };

  checked = config:
    let failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions or [ ]);
    in if failed == [ ] then config
       else throw "Failed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}";

  host =
    let
      config = checked (lib.evalModules {
        modules = [
          stubs.nixos
          { _module.args.pkgs = stubs.pkgs; }
          (import ../modules/host.nix { inherit (stubs) self; })
          (if configuration == null then ../example-host/configuration.nix else configuration)
          extra
        ];
      }).config;
    in
    {
      units = lib.mapAttrs
        (_: s: { inherit (s) description wantedBy requires after wants environment serviceConfig; })
        config.systemd.services;
      kernelModules = config.boot.kernelModules;
      tmpfiles = config.systemd.tmpfiles.rules;
      udevRules = config.services.udev.extraRules;
      systemPackages = map toString config.environment.systemPackages;
      variables = config.environment.variables;
      groups = lib.attrNames config.users.groups;
      users = lib.mapAttrs (_: u: { inherit (u) extraGroups isNormalUser; }) config.users.users;
      firewall = config.networking.firewall.interfaces;
      inherit (config) warnings;
    };

  devenv =
    let
      config = (lib.evalModules {
        # As devenv passes them: its inputs as special arguments, pkgs as a module argument.
        specialArgs.inputs.mvm = stubs.self;
        modules = [
          stubs.devenv
          { _module.args.pkgs = stubs.pkgs; }
          ../devenv/devenv.nix
          (if configuration == null then ./devenv-example.nix else configuration)
          extra
        ];
      }).config;
    in
    {
      packages = map toString config.packages;
      files = lib.mapAttrs
        (_: f: { inherit (f) toml; text = if f.toml == null then f.text else import ./toml.nix f.toml; })
        config.files;
      inherit (config) enterShell;
      processes = lib.mapAttrs (_: p: p.exec) config.processes;
    };
in
{ inherit host devenv; }.${module}

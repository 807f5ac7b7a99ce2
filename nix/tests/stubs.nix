# Stand-ins for what the modules take from nixpkgs and NixOS/devenv, for
# evaluating them with nixpkgs' lib alone (nix/tests/eval.nix): the option
# declarations the modules set, with the types NixOS and devenv give them
# (simplified where the real ones only add rendering), a `pkgs` with just
# what the modules touch, and the mvm package as a derivation-shaped attrset.
{ lib, mvmOutPath }:
let
  inherit (lib) mkOption types;
  listOfStr = mkOption { type = types.listOf types.str; default = [ ]; };
  # NixOS's unitOption: a scalar or a list of them (lists: several lines).
  unitScalar = types.oneOf [ types.bool types.int types.str types.path types.package ];
  unitOption = types.either unitScalar (types.listOf unitScalar);
in
rec {
  mvm = {
    type = "derivation";
    name = "mvm-0.1.0";
    pname = "mvm";
    outPath = mvmOutPath;
    meta.mainProgram = "mvm";
  };

  self.packages.x86_64-linux.mvm = mvm;

  pkgs = {
    stdenv.hostPlatform.system = "x86_64-linux";
    # nixpkgs' formats.toml: `generate` is a build (remarshal); here the
    # text is written by nix/tests/toml.nix with builtins.toFile.
    formats.toml = { }: {
      type = types.attrsOf types.anything;
      generate = name: value: builtins.toFile name (import ./toml.nix value);
    };
  };

  # The NixOS options services.mvm sets (nixos/modules/...).
  nixos = { ... }: {
    options = {
      assertions = mkOption {
        type = types.listOf (types.submodule {
          options.assertion = mkOption { type = types.bool; };
          options.message = mkOption { type = types.str; };
        });
        default = [ ];
      };
      warnings = listOfStr;

      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
      environment.variables = mkOption {
        type = types.attrsOf (types.oneOf [ (types.listOf (types.oneOf [ types.int types.str types.path ])) types.int types.str types.path ]);
        default = { };
      };

      boot.kernelModules = listOfStr;

      users.groups = mkOption {
        type = types.attrsOf (types.submodule ({ name, ... }: {
          options.name = mkOption { type = types.str; default = name; };
          options.gid = mkOption { type = types.nullOr types.int; default = null; };
          options.members = listOfStr;
        }));
        default = { };
      };
      users.users = mkOption {
        type = types.attrsOf (types.submodule ({ name, ... }: {
          options.name = mkOption { type = types.str; default = name; };
          options.isNormalUser = mkOption { type = types.bool; default = false; };
          options.isSystemUser = mkOption { type = types.bool; default = false; };
          options.group = mkOption { type = types.str; default = ""; };
          options.extraGroups = listOfStr;
          options.home = mkOption { type = types.path; default = "/var/empty"; };
        }));
        default = { };
      };

      services.udev.extraRules = mkOption { type = types.lines; default = ""; };
      systemd.tmpfiles.rules = listOfStr;

      networking.firewall.interfaces = mkOption {
        type = types.attrsOf (types.submodule {
          options.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
          options.allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
        });
        default = { };
      };

      systemd.services = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            enable = mkOption { type = types.bool; default = true; };
            description = mkOption { type = types.singleLineStr; default = ""; };
            wantedBy = listOfStr;
            requiredBy = listOfStr;
            after = listOfStr;
            before = listOfStr;
            requires = listOfStr;
            wants = listOfStr;
            environment = mkOption {
              type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
              default = { };
            };
            path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; };
            script = mkOption { type = types.lines; default = ""; };
            serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
            unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
          };
        });
        default = { };
      };
    };
  };

  # The devenv options the devenv module sets or reads (devenv's
  # src/modules: top-level.nix, files.nix, processes.nix).
  devenv = { ... }: {
    options = {
      packages = mkOption { type = types.listOf types.package; default = [ ]; };
      enterShell = mkOption { type = types.lines; default = ""; };
      env = mkOption { type = types.lazyAttrsOf types.anything; default = { }; };
      files = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            text = mkOption { type = types.nullOr types.str; default = null; };
            json = mkOption { type = types.nullOr (types.attrsOf types.anything); default = null; };
            yaml = mkOption { type = types.nullOr (types.attrsOf types.anything); default = null; };
            toml = mkOption { type = types.nullOr (pkgs.formats.toml { }).type; default = null; };
            executable = mkOption { type = types.nullOr types.bool; default = null; };
          };
        });
        default = { };
      };
      processes = mkOption {
        type = types.attrsOf (types.submodule {
          options.exec = mkOption { type = types.str; };
          options.process-compose = mkOption { type = types.attrsOf types.anything; default = { }; };
        });
        default = { };
      };
    };
  };
}

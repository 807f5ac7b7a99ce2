# mvm as a Nix flake: the packages (mvm with its guest agent, the guest
# kernel built from guest-kernel/kernel.fragment, the guest initramfs), the
# NixOS host module, a devenv module and a dev shell. See nix/README.md:
# these machines reach no Nix binary cache and no nixpkgs source, so this
# flake is parsed and cross-checked in CI but has not been built here.
{
  description = "mvm: per-project Linux microVMs on our own Rust VMM";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      # The VMM is x86_64 only (arch/x86_64 in vmm/).
      systems = [ "x86_64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: import ./nix/packages.nix { inherit pkgs; });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.system}.mvm}/bin/mvm";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = import ./nix/shell.nix { inherit pkgs; };
      });

      checks = forAllSystems (pkgs: {
        inherit (self.packages.${pkgs.system}) mvm guest-kernel guest-initramfs;
        # Every .nix file parses, and the module's options match mvm's
        # config schema (the same checks CI runs with Debian's nix-bin).
        nix-files = pkgs.runCommand "mvm-nix-files" { nativeBuildInputs = [ pkgs.nix ]; } ''
          cd ${./.}
          for f in $(find . -name '*.nix'); do nix-instantiate --parse "$f" >/dev/null; done
          touch $out
        '';
      });

      # The host module: services.mvm.* (network plane, kernel modules,
      # device access, declarative VMs). `self` gives it the packages.
      nixosModules.host = import ./nix/modules/host.nix { inherit self; };
      nixosModules.default = self.nixosModules.host;

      # For devenv projects: `imports = [ inputs.mvm.devenvModules.mvm ];`
      # then `mvm.enable = true;` (see nix/devenv/mvm.nix).
      devenvModules.mvm = import ./nix/devenv/mvm.nix { inherit self; };

      templates.host = {
        path = ./nix/example-host;
        description = "A NixOS host configuration with mvm enabled";
      };
    };
}

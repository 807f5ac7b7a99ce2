# A NixOS host with mvm: `nix flake init -t github:OWNER/mvm#host`, then
# adjust configuration.nix and `nixos-rebuild switch --flake .#devbox`.
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
    mvm.url = "github:OWNER/mvm"; # this repository
    mvm.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { nixpkgs, mvm, ... }: {
    nixosConfigurations.devbox = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [
        mvm.nixosModules.host
        ./configuration.nix
      ];
    };
  };
}

# Entry point for devenv's YAML imports (`imports: [ mvm/nix/devenv ]` with
# an input named `mvm`): the module in mvm.nix, with this flake as `self`.
# Imported rather than called: devenv gives `inputs` as a special argument
# but `pkgs` as a module argument (_module.args.pkgs), which only reaches a
# module the module system calls itself.
{ inputs, ... }:
{
  imports = [ (import ./mvm.nix { self = inputs.mvm; }) ];
}

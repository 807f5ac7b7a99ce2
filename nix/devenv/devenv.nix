# Entry point for devenv's YAML imports (`imports: [ mvm/nix/devenv ]` with
# an input named `mvm`): the module in mvm.nix, with this flake as `self`.
{ inputs, ... }@args:
import ./mvm.nix { self = inputs.mvm; } args

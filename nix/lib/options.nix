# Nodes of lib/schema.nix (mvm's config schema) -> NixOS-style options.
# Used by the host module (services.mvm.vms.<name>) and the devenv module
# (mvm.*), so both offer exactly mvm.toml's keys.
{ lib }:
let
  inherit (lib) mkOption types;

  typeOf = n:
    if n.kind == "bool" then types.bool
    else if n.kind == "int" then
      (if n ? min && n ? max then types.ints.between n.min n.max
       else if n ? min && n.min >= 0 then types.ints.unsigned
       else types.int)
    else if n.kind == "str" then types.str
    else if n.kind == "enum" then types.enum n.values
    else if n.kind == "list" then types.listOf (typeOf n.elem)
    else if n.kind == "attrs" then types.attrsOf (typeOf n.elem)
    else if n.kind == "nullable" then types.nullOr (typeOf n.elem)
    else if n.kind == "either" then types.oneOf (map typeOf n.alternatives)
    else if n.kind == "submodule" then types.submodule { options = optionsOf n.options; }
    else types.anything;

  # Optional keys default to null and are left out of the generated
  # mvm.toml (see toConfig), so mvm's own defaults apply.
  optionsOf = lib.mapAttrs (name: n:
    if n.required or false
    then mkOption { type = typeOf n; description = n.description; }
    # (A node that is nullable already is not wrapped twice.)
    else mkOption {
      type = if n.kind == "nullable" then typeOf n else types.nullOr (typeOf n);
      default = null;
      description = n.description;
    });
in
{
  inherit typeOf optionsOf;
  # Options of the schema's root object (mvm.toml's keys).
  configOptions = optionsOf (import ../schema-tree.nix).options;
  # Option values -> the attrset written as mvm.toml (nulls dropped).
  toConfig = values: lib.filterAttrsRecursive (_: v: v != null) values;
}

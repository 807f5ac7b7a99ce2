# mvm's config schema (JSON Schema, as `mvm config --schema` prints it) as a
# tree of option descriptions, with builtins only, so it evaluates without
# nixpkgs: `nix-instantiate --eval --strict --json` of schema-tree.nix is
# what the Rust test (cli/tests/nix.rs) compares with the schema. The host
# module turns each node into a NixOS option type (modules/host.nix).
#
# Node: { kind, description, required?, ... } where kind is
#   "bool" | "int" (min, max) | "str" | "enum" (values) | "list" (elem)
#   | "attrs" (elem) | "submodule" (options: name -> node) | "nullable" (elem)
#   | "either" (alternatives) | "any"
let
  inherit (builtins) elem filter hasAttr head isList length map replaceStrings;

  # "#/$defs/Service" or "#/definitions/Service" -> the definition.
  resolve = root: ref:
    let
      name = replaceStrings [ "#/$defs/" "#/definitions/" ] [ "" "" ] ref;
      defs = root."$defs" or root.definitions or { };
    in
    defs.${name};

  describe = s: s.description or "";

  node = root: s:
    if hasAttr "$ref" s then
      # A $ref may carry its own description next to it.
      (node root (resolve root s."$ref")) // (if s ? description then { description = s.description; } else { })
    else if s ? anyOf || s ? oneOf then
      let
        alts = s.anyOf or s.oneOf;
        nonNull = filter (a: (a.type or "") != "null") alts;
        inner = if length nonNull == 1 then node root (head nonNull)
          else { kind = "either"; alternatives = map (node root) nonNull; description = ""; };
      in
      if length nonNull < length alts
      then { kind = "nullable"; elem = inner; description = describe s; }
      else inner // { description = describe s; }
    else if isList (s.type or null) then
      let
        types = filter (t: t != "null") s.type;
        inner = node root (s // { type = head types; });
      in
      if length types == 1 && elem "null" s.type
      then { kind = "nullable"; elem = inner; description = describe s; }
      else { kind = "either"; alternatives = map (t: node root (s // { type = t; })) types; description = describe s; }
    else if s ? enum then
      { kind = "enum"; values = s.enum; description = describe s; }
    else if (s.type or "") == "boolean" then
      { kind = "bool"; description = describe s; }
    else if (s.type or "") == "integer" then
      { kind = "int"; description = describe s; }
      // (if s ? minimum then { min = s.minimum; } else { })
      // (if s ? maximum then { max = s.maximum; } else { })
    else if (s.type or "") == "string" then
      { kind = "str"; description = describe s; }
    else if (s.type or "") == "array" then
      { kind = "list"; elem = node root (s.items or { }); description = describe s; }
    else if (s.type or "") == "object" && s ? properties then
      {
        kind = "submodule";
        description = describe s;
        options = builtins.mapAttrs
          (name: p: node root p // { required = elem name (s.required or [ ]); })
          s.properties;
      }
    else if (s.type or "") == "object" then
      let
        # Values: additionalProperties, else the (first) patternProperties schema.
        patterns = builtins.attrValues (s.patternProperties or { });
        value =
          if builtins.isAttrs (s.additionalProperties or false) then s.additionalProperties
          else if patterns != [ ] then head patterns
          else { };
      in
      { kind = "attrs"; elem = node root value; description = describe s; }
    else
      { kind = "any"; description = describe s; };
in
{
  # The whole schema file -> the node of its root object.
  tree = schemaFile:
    let root = builtins.fromJSON (builtins.readFile schemaFile);
    in node root root;
}

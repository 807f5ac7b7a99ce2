# A small TOML writer for the tests' stand-in of nixpkgs' `pkgs.formats.toml`
# (which runs remarshal, a build). Every key is written as `key = value` at
# the top level, tables inline, so nesting needs no section headers.
# Strings are JSON strings, which TOML reads as basic strings.
let
  inherit (builtins) attrNames concatStringsSep isAttrs isBool isFloat isInt isList isString map toJSON toString;
  value = v:
    if isString v then toJSON v
    else if isBool v then (if v then "true" else "false")
    else if isInt v || isFloat v then toString v
    else if isList v then "[" + concatStringsSep ", " (map value v) + "]"
    else if isAttrs v then "{" + concatStringsSep ", " (map (k: "${toJSON k} = ${value v.${k}}") (attrNames v)) + "}"
    else throw "toml.nix: cannot write a ${builtins.typeOf v}";
in
attrs: concatStringsSep "" (map (k: "${toJSON k} = ${value attrs.${k}}\n") (attrNames attrs))

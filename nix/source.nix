# The workspace sources the Rust builds need (no target/, no docs).
{ lib }:
lib.cleanSourceWith {
  src = ../.;
  filter = path: type:
    let rel = lib.removePrefix (toString ../. + "/") (toString path);
    in !(lib.hasPrefix "target" rel || lib.hasPrefix ".git" rel || lib.hasSuffix ".md" rel);
}

# The devenv module's example (nix/README.md), with one devenv process.
{ ... }:
{
  mvm.enable = true;
  mvm.config.ports = [ "8000:8000" ];
  mvm.autostart = true;
  processes.web.exec = "python3 -m http.server 8000";
}

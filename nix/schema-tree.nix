# The option tree of `services.mvm.vms.<name>` as the host module builds it
# from mvm-config.schema.json (the output of `mvm config --schema`, kept in
# this folder and checked against the binary by cli/tests/nix.rs).
(import ./lib/schema.nix).tree ./mvm-config.schema.json

# NixOS host module: services.mvm. What `sudo mvm net setup` and a user's
# `mvm create` do imperatively, declared: the packages, the kernel modules,
# /dev/kvm and tap access for a group, the network plane (bridge virbr-mvm,
# subnet, NAT, a tap pool, DHCP/DNS by `mvm _netd`), and VMs declared in
# Nix (services.mvm.vms.<name>) run as systemd units.
#
# The VM options are generated from mvm's own config schema
# (../mvm-config.schema.json = `mvm config --schema`), one to one; the
# units' command lines come from ../units.json, which cli/tests/nix.rs runs
# against the real `mvm`.
{ self }:
{ config, lib, pkgs, ... }:
let
  cfg = config.services.mvm;
  inherit (lib) mkOption mkEnableOption mkIf types;

  units = builtins.fromJSON (builtins.readFile ../units.json);
  schemaOptions = import ../lib/options.nix { inherit lib; };

  vmModule = { name, ... }: {
    options = schemaOptions.configOptions // {
      project = mkOption {
        type = types.str;
        description = "The project folder on the host, seen in the VM at /project (copy-on-write).";
      };
      autostart = mkOption {
        type = types.bool;
        default = true;
        description = "Start the VM at boot (else: systemctl start mvm-vm-${name}).";
      };
    };
  };

  # systemd's sandbox for every mvm unit: nothing these services do needs
  # a new privilege, the kernel's modules, logs, clock or hostname, a
  # writable /usr, /boot or /etc, or a shared /tmp.
  sandbox = {
    NoNewPrivileges = true;
    ProtectSystem = "full";
    PrivateTmp = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictSUIDSGID = true;
    RestrictRealtime = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
    UMask = "0077";
  };
  # A VM's unit runs `mvm` and its VMM as the user: they need only KVM,
  # taps and vhost-net, netlink and IP sockets, their unit's capabilities,
  # and no namespaces of their own (an unprivileged VMM is not jailed by
  # mvm: this is its jail).
  vmSandbox = sandbox // {
    CapabilityBoundingSet = [ "CAP_NET_ADMIN" "CAP_NET_BIND_SERVICE" ];
    DevicePolicy = "closed";
    DeviceAllow = [ "/dev/kvm rw" "/dev/net/tun rw" "/dev/vhost-net rw" ];
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
    # Only the namespaces mvm's own jail takes (a user namespace of its own).
    RestrictNamespaces = "user mnt ipc uts";
    ProtectControlGroups = true;
    ProtectHome = "read-only";
  };

  mvm = lib.getExe cfg.package;
  stateDir = "/var/lib/mvm";
  netDir = "${stateDir}/net";
  vmHome = "${stateDir}/declarative";

  # units.json argv with @placeholders@ filled in, as one ExecStart line.
  # systemd expands %specifiers and $VARIABLES in it: doubled, they are literal.
  command = argv: values:
    lib.escapeShellArgs (map (lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ]) ([ mvm ] ++ map
      (a: lib.replaceStrings (map (k: "@${k}@") (lib.attrNames values)) (lib.attrValues values) a)
      argv));

  toml = pkgs.formats.toml { };
  vmConfigFile = name: vm:
    toml.generate "mvm-${name}.toml"
      (schemaOptions.toConfig (removeAttrs vm [ "project" "autostart" "_module" ] // { inherit name; }));

  env = { MVM_NET_DIR = netDir; };
in
{
  options.services.mvm = {
    enable = mkEnableOption "mvm, per-project Linux microVMs";

    package = mkOption {
      type = types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.mvm;
      defaultText = lib.literalExpression "mvm.packages.\${system}.mvm";
      description = "The mvm package (with mvm-init and the guest kernel).";
    };

    group = mkOption {
      type = types.str;
      default = "mvm";
      description = "Members may use /dev/kvm, /dev/vhost-net and the tap pool.";
    };

    user = mkOption {
      type = types.str;
      description = ''
        The user who runs VMs: owns the tap pool and the network state, and
        runs the declarative VMs. Added to `group`.
      '';
    };

    network = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Set up the bridge, NAT, the tap pool and DHCP/DNS at boot.";
      };
      subnet = mkOption {
        type = types.str;
        default = "10.77.0.1/24";
        description = "The bridge's address and prefix (the VMs' gateway and subnet).";
      };
      taps = mkOption {
        type = types.ints.between 0 1024;
        default = 8;
        description = "Taps pre-created for unprivileged use by `user`.";
      };
    };

    vms = mkOption {
      type = types.attrsOf (types.submodule vmModule);
      default = { };
      description = ''
        VMs declared in Nix. Every option but `project` and `autostart` is a
        key of mvm.toml (see `mvm config --schema`); each VM runs as the unit
        mvm-vm-<name>.
      '';
    };
  };

  config = mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];
    # Every user's mvm shares one network plane (one DHCP server, one lease table).
    environment.variables = env;

    boot.kernelModules = [ "kvm-intel" "kvm-amd" "tun" "vhost_net" "bridge" ]
      ++ [ "nf_tables" "nft_chain_nat" "nft_masq" "nft_nat" "nft_ct" "nft_fib_inet" ];

    users.groups.${cfg.group} = { };
    users.users.${cfg.user}.extraGroups = [ cfg.group ];

    services.udev.extraRules = ''
      KERNEL=="kvm", GROUP="${cfg.group}", MODE="0660"
      KERNEL=="vhost-net", GROUP="${cfg.group}", MODE="0660"
      SUBSYSTEM=="misc", KERNEL=="tun", MODE="0666"
    '';

    # DHCP and DNS from the VMs to `mvm _netd` on the bridge: NixOS's
    # firewall (on by default) drops what an interface does not allow.
    networking.firewall.interfaces.virbr-mvm = mkIf cfg.network.enable {
      allowedUDPPorts = [ 53 67 ];
      allowedTCPPorts = [ 53 ];
    };

    systemd.tmpfiles.rules = [
      "d ${stateDir} 0755 root root -"
      "d ${netDir} 0750 ${cfg.user} ${cfg.group} -"
      "d ${vmHome} 0750 ${cfg.user} ${cfg.group} -"
    ];

    systemd.services = lib.mkMerge [
      (mkIf cfg.network.enable {
        mvm-net = {
          description = "mvm network plane (bridge, NAT, tap pool)";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          environment = env;
          serviceConfig = sandbox // {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = command units.network.setup {
              user = cfg.user;
              subnet = cfg.network.subnet;
              taps = toString cfg.network.taps;
            };
            ExecStop = command units.network.teardown { };
          };
        };
        mvm-netd = {
          description = "mvm DHCP and DNS for VMs";
          wantedBy = [ "multi-user.target" ];
          requires = [ "mvm-net.service" ];
          after = [ "mvm-net.service" ];
          environment = env;
          serviceConfig = sandbox // {
            ExecStart = command units.network.daemon { };
            Restart = "always";
          };
        };
      })
      (lib.mapAttrs'
        (name: vm: lib.nameValuePair "mvm-vm-${name}" {
          description = "mvm VM ${name}";
          wantedBy = lib.optional vm.autostart "multi-user.target";
          wants = lib.optional cfg.network.enable "mvm-netd.service";
          after = lib.optional cfg.network.enable "mvm-netd.service";
          environment = env // { MVM_HOME = vmHome; };
          serviceConfig = vmSandbox // {
            # `mvm` returns once the VM's own VMM process runs; that
            # process is the unit's main process.
            Type = "forking";
            PIDFile = "${vmHome}/vms/${name}/pid";
            User = cfg.user;
            Group = cfg.group;
            # Taps from the pool need nothing; port forwards need nftables.
            AmbientCapabilities = [ "CAP_NET_ADMIN" "CAP_NET_BIND_SERVICE" ];
            ExecStart = command units.vm.start {
              inherit name;
              project = vm.project;
              config = toString (vmConfigFile name vm);
            };
            ExecStop = command units.vm.stop { inherit name; project = vm.project; };
            Restart = "on-failure";
            TimeoutStartSec = 300;
          };
        })
        cfg.vms)
    ];
  };
}

# The mvm part of a host configuration (add it to your own).
{ ... }:
{
  services.mvm = {
    enable = true;
    # Owns the tap pool and the network state; runs the VMs below.
    user = "alice";
    network = {
      subnet = "10.77.0.1/24";
      taps = 8;
    };
    # A VM declared here runs as the systemd unit mvm-vm-web; every key
    # but project/autostart is an mvm.toml key (`mvm config --schema`).
    vms.web = {
      project = "/home/alice/src/web";
      cpus = 2;
      memory = "2G";
      # Every interface; "8080:8080" would be the host's loopback only.
      ports = [ "0.0.0.0:8080:8080" ];
      persistent = true;
      services.dev = {
        command = "npm run dev";
        ready.port = 8080;
      };
    };
  };

  # Taps, bridges and the VMs' NAT need these; the module loads them at
  # boot (kvm-intel/kvm-amd, tun, vhost_net, bridge, nf_tables, ...).
  users.users.alice.isNormalUser = true;
}

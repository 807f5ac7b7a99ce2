#!/usr/bin/env python3
"""Seeds for config_files: mvm.toml (first byte even) and vm.toml (odd),
valid and hostile: every key, services with dependencies and a cycle,
sizes, ports, shares with '..' and odd guest paths, wrong types, deep
nesting, a hand-edited vm.toml smuggling a kernel argument."""
import seedlib

MVM = b"\x00"
VM = b"\x01"

FULL = b'''name = "shop"
cpus = 4
memory = "2G"
disk = "50G"
persistent = true
root = "host"
network = { enable = true, allow = ["10.1.0.0/16"] }
ports = ["8080:3000", "127.0.0.1:5353:53/udp", "0.0.0.0:9000:9000"]
env = { NODE_ENV = "development" }
env_host = ["AWS_*", "GITHUB_TOKEN"]
shares = [{ host = "../data", guest = "/data", mode = "ro" }]
home = ["~/.gitconfig"]
shell = ["bash", "-l"]

[services.web]
command = "npm run dev"
depends_on = ["db"]
ready = { port = 3000 }

[services.db]
command = ["postgres", "-D", "/var/lib/pg"]
restart = "always"
ready = { command = "pg_isready" }
'''

VMSPEC = b'''id = "0123abcd"
name = "web"
project = "/src/web"
cpus = 2
memory_mib = 1024
persistent = false
disk_mib = 2048
created = 1
'''

seeds = {
    "mvm_full": MVM + FULL,
    "mvm_empty": MVM,
    "mvm_cycle": MVM + b'[services.a]\ncommand = "a"\ndepends_on = ["b"]\n[services.b]\ncommand = "b"\ndepends_on = ["a"]\n',
    "mvm_self_dep": MVM + b'[services.a]\ncommand = "a"\ndepends_on = ["a"]\n',
    "mvm_sizes": MVM + b'memory = 18446744073709551615\ndisk = "99999999999T"\n',
    "mvm_bad_types": MVM + b'cpus = "four"\nmemory = []\nports = [80]\n',
    "mvm_share_escape": MVM + b'shares = [{ host = "/etc", guest = "/../../proc" }, { host = "..", guest = "/a b" }]\n',
    "mvm_deep": MVM + b"env = " + b"{ a = " * 64 + b"1" + b" }" * 64 + b"\n",
    "mvm_unicode": MVM + b'name = "\xc3\xa9t\xc3\xa9"\n[env]\n"\xe2\x80\xae" = "x"\n',
    "mvm_float_cpus": MVM + b"cpus = 2.5\n",
    "vm_valid": VM + VMSPEC,
    "vm_smuggle": VM + VMSPEC + b'[[shares]]\nhost = "/tmp"\nguest = "/x init=/bin/sh"\n',
    "vm_unknown_key": VM + VMSPEC + b'bogus = 1\n',
    "vm_garbage": VM + b"\xff\xfe[[[\n",
}
seedlib.write("config_files", seeds)

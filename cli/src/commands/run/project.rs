//! `mvm run` without `--initrd`: a throw-away VM for the project, the
//! command (or a login shell) run in it, the VM removed after.

use std::process::ExitCode;

use anyhow::Context;
use manager::create::CreateOptions;

use super::RunArgs;
use crate::args::NetArg;
use crate::report::Stderr;

/// `mvm run [-- COMMAND]` without --initrd: a throw-away managed VM for the
/// project.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if !args.shares.is_empty()
        || !args.vhost_user_fs.is_empty()
        || args.cmdline.is_some()
        || args.console != "stdout"
    {
        anyhow::bail!(
            "--share, --vhost-user-fs, --cmdline and --console apply to kernel+initramfs runs (with --initrd)"
        );
    }
    let project = match args.project {
        Some(p) => p,
        None => std::env::current_dir().context("cannot tell the current folder")?,
    };
    let id = manager::state::spec_new_id()?;
    let create = CreateOptions {
        cpus: Some(args.cpus),
        memory_mib: Some(args.memory),
        net: args.net.unwrap_or(NetArg::Tap).mode(args.no_net),
        allow_net: args.allow_net,
        kernel: args.kernel,
        share_home: args.share_home,
        disk_mib: args.disk,
        seccomp: args.seccomp,
        volumes: args.volumes,
        ..CreateOptions::for_project(format!("run-{id}"), project)
    };
    let vm = manager::lifecycle::throwaway(&create, &Stderr)?;
    use std::io::IsTerminal;
    let (argv, tty) = if args.command.is_empty() {
        let shell = crate::session::LOGIN_SHELL.to_string();
        (vec!["/bin/sh".into(), "-c".into(), shell], true)
    } else {
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        (args.command, tty)
    };
    crate::session::run(&vm.dir.name, argv, Vec::new(), Vec::new(), None, tty)
}

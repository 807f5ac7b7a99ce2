//! `mvm trust`: let a project's mvm.toml reach beyond its folder (shares
//! outside it, home paths, `env_host` wildcards), as `direnv allow` does.

use std::path::PathBuf;

use clap::Args;

use manager::project::{self, detect::CONFIG_FILE, trust};

#[derive(Args)]
pub struct TrustArgs {
    /// The project folder [default: the current folder].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Withdraw the trust instead.
    #[arg(long)]
    pub revoke: bool,
}

pub fn trust(args: TrustArgs) -> anyhow::Result<()> {
    let folder = project::folder(args.dir.as_deref())?;
    let file = folder.join(CONFIG_FILE);
    if args.revoke {
        let had = trust::revoke(&file)?;
        println!(
            "{} {}",
            if had {
                "no longer trusted:"
            } else {
                "was not trusted:"
            },
            file.display()
        );
        return Ok(());
    }
    let text = std::fs::read_to_string(&file).map_err(|e| {
        anyhow::anyhow!(
            "cannot trust {}: {e} (give a project folder with an mvm.toml)",
            file.display()
        )
    })?;
    // Only a file mvm can use is worth trusting; the error says what is wrong.
    let mut config = project::config::parse(&file, &text).map_err(|e| anyhow::anyhow!(e))?;
    let reach = trust::strip_untrusted(&folder, &mut config);
    trust::trust(&file, text.as_bytes())?;
    println!(
        "trusted {} as it is now{}",
        file.display(),
        if reach.is_empty() {
            String::new()
        } else {
            format!(" (allows: {})", reach.join(", "))
        }
    );
    Ok(())
}

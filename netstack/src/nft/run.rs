//! Running `nft -j`: applying a batch of commands atomically, listing, and
//! turning nft's failures into our errors.

use std::borrow::Cow;

use nftables::helper::{self, NftablesError};
use nftables::schema::{NfObject, Nftables};
use serde_json::Value;

use crate::error::{Error, Result};

fn nft_program() -> &'static str {
    for p in ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    "nft"
}

fn map_err(e: NftablesError) -> Error {
    match e {
        NftablesError::NftFailed { stderr, .. } => {
            let line = stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("nft failed")
                .to_string();
            if line.contains("Operation not permitted") {
                Error::MissingPrivilege {
                    what: "changing nftables rules".into(),
                    cap: "CAP_NET_ADMIN",
                    how: "run `sudo mvm net setup` once, or run this as root",
                }
            } else {
                Error::Nft(line)
            }
        }
        NftablesError::NftExecution { inner, .. } => Error::io("running nft", inner),
        other => Error::Nft(other.to_string().lines().next().unwrap_or("").to_string()),
    }
}

pub(super) fn apply(cmds: Vec<NfObject<'_>>) -> Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    let doc = Nftables {
        objects: Cow::Owned(cmds),
    };
    tracing::trace!(json = %serde_json::to_string(&doc).unwrap_or_default(), "nft");
    helper::apply_ruleset_with_args(&doc, Some(nft_program()), helper::DEFAULT_ARGS)
        .map_err(map_err)
}

pub(super) fn list(args: &[&str]) -> Result<Option<Value>> {
    match helper::get_current_ruleset_raw(Some(nft_program()), args) {
        Ok(out) => serde_json::from_str(&out)
            .map(Some)
            .map_err(|e| Error::Nft(format!("unreadable nft output: {e}"))),
        Err(NftablesError::NftFailed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(None)
        }
        Err(e) => Err(map_err(e)),
    }
}

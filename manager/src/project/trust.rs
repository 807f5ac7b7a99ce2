//! Trusting a project's `mvm.toml`. The file comes with the project, so it
//! is untrusted input: what would reach beyond the project folder and its
//! VM (shares of host folders outside it, home paths, `env_host`
//! wildcards, private networks in `network.allow`, forwards listening on
//! other than the host's loopback, volumes of another project or made by
//! hand) is honoured only once the user has run `mvm trust` on that
//! folder, as `direnv allow` does. A trust is remembered by the file's path and the
//! SHA-256 of its content: any edit needs a new `mvm trust`.

use std::path::{Path, PathBuf};

use crate::error::Context;

use super::config::{Network, ProjectConfig};

/// Where trusts are kept: one file per trusted mvm.toml.
fn trust_dir() -> crate::Result<PathBuf> {
    Ok(crate::state::home()?.join("trust"))
}

/// The record of `file`: named by the hash of its path, holding the hash
/// of the trusted content and the path.
fn record(file: &Path) -> crate::Result<PathBuf> {
    Ok(trust_dir()?.join(hex(&sha256(file.as_os_str().as_encoded_bytes()))))
}

fn record_text(file: &Path, content: &[u8]) -> String {
    format!("{}\n{}\n", hex(&sha256(content)), file.display())
}

/// Whether `file` (absolute) with this content was trusted.
pub fn is_trusted(file: &Path, content: &[u8]) -> bool {
    record(file)
        .and_then(|r| Ok(std::fs::read_to_string(r)?))
        .is_ok_and(|t| t == record_text(file, content))
}

/// Trusts `file` with this content (replacing an older trust of it).
pub fn trust(file: &Path, content: &[u8]) -> crate::Result<()> {
    let dir = trust_dir()?;
    crate::state::create_private_dir(&dir)?;
    let rec = record(file)?;
    let tmp = rec.with_extension("tmp");
    std::fs::write(&tmp, record_text(file, content))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &rec).with_context(|| format!("cannot write {}", rec.display()))
}

/// Forgets the trust of `file`; false when there was none.
pub fn revoke(file: &Path) -> crate::Result<bool> {
    match std::fs::remove_file(record(file)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).context("cannot remove the trust record"),
    }
}

/// What an untrusted mvm.toml asks for beyond the project folder, one
/// short phrase each; `config` keeps only the rest.
pub fn strip_untrusted(project: &Path, config: &mut ProjectConfig) -> Vec<String> {
    let mut skipped = Vec::new();
    config.shares.retain(|s| {
        let inside =
            std::fs::canonicalize(project.join(&s.host)).is_ok_and(|abs| abs.starts_with(project));
        if !inside {
            skipped.push(format!("share {}", s.host));
        }
        inside
    });
    for h in config.home.drain(..) {
        skipped.push(format!("home {h}"));
    }
    config.env_host.retain(|p| {
        let wildcard = p.0.ends_with('*');
        if wildcard {
            skipped.push(format!("env_host {}", p.0));
        }
        !wildcard
    });
    if let Some(Network::Table(t)) = &mut config.network {
        for a in t.allow.drain(..) {
            skipped.push(format!("network.allow {}", a.0));
        }
    }
    // A forward on another address is kept, on the loopback.
    for p in &mut config.ports {
        if let Some(addr) = p.0.addr.filter(|a| !a.is_loopback()) {
            skipped.push(format!(
                "port {} on {addr} (kept on loopback)",
                p.0.host_port
            ));
            p.0.addr = None;
        }
    }
    // A volume this project's mvm.toml made (or will make) is its own;
    // another one may hold another project's data.
    config.volumes.retain(|v| {
        let own = !crate::volume::exists(&v.name).unwrap_or(true)
            || crate::volume::meta(&v.name)
                .and_then(|m| m.project)
                .as_deref()
                == Some(project);
        if !own {
            skipped.push(format!("volume {} (not made by this project)", v.name));
        }
        own
    });
    skipped
}

/// Applies the trust rule to a project's mvm.toml (`text`, as parsed into
/// `config`): untrusted, what it asks beyond the folder is dropped, and one
/// line says what and how to allow it.
pub fn gate(
    project: &Path,
    file: &Path,
    text: &str,
    config: &mut ProjectConfig,
    report: &dyn crate::Report,
) {
    if is_trusted(file, text.as_bytes()) {
        return;
    }
    let skipped = strip_untrusted(project, config);
    if !skipped.is_empty() {
        report.progress(&format!(
            "{} is not trusted, skipped: {}; run `mvm trust {}` to allow them",
            file.display(),
            skipped.join(", "),
            project.display()
        ));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (FIPS 180-4): small enough to keep here rather than add a crate
/// for hashing a few short files.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }
}

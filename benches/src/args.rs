//! Command-line options of the bench programs: `--name value` pairs only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

pub struct Args {
    values: HashMap<String, String>,
}

/// Prints `msg` and the usage, exits 2.
fn usage_error(usage: &str, msg: &str) -> ! {
    eprintln!("error: {msg}\n\n{usage}");
    std::process::exit(2)
}

impl Args {
    /// Parses `std::env::args`; `known` are the option names without `--`.
    /// `--help` prints `usage` and exits 0; anything unknown exits 2.
    pub fn parse(usage: &str, known: &[&str]) -> Args {
        Self::parse_from(std::env::args().skip(1), usage, known)
            .unwrap_or_else(|e| usage_error(usage, &e))
    }

    fn parse_from(
        args: impl Iterator<Item = String>,
        usage: &str,
        known: &[&str],
    ) -> Result<Args, String> {
        let mut values = HashMap::new();
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            if a == "-h" || a == "--help" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument '{a}'"));
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = args
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    (name.to_string(), v)
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown option --{name}"));
            }
            values.insert(name, value);
        }
        Ok(Args { values })
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A required path.
    pub fn path(&self, name: &str, usage: &str) -> PathBuf {
        match self.str(name) {
            Some(v) => PathBuf::from(v),
            None => usage_error(usage, &format!("--{name} is required")),
        }
    }

    /// An optional value parsed as `T`, or `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T, usage: &str) -> T {
        match self.str(name) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| usage_error(usage, &format!("bad value for --{name}: '{v}'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Args, String> {
        Args::parse_from(a.iter().map(|s| s.to_string()), "usage", &["runs", "out"])
    }

    #[test]
    fn parses_pairs() {
        let a = parse(&["--runs", "5", "--out=/x"]).unwrap();
        assert_eq!(a.get("runs", 1u32, ""), 5);
        assert_eq!(a.str("out"), Some("/x"));
        assert_eq!(a.get("missing", 7u32, ""), 7);
        assert!(parse(&["--bogus", "1"]).is_err());
        assert!(parse(&["--runs"]).is_err());
        assert!(parse(&["stray"]).is_err());
    }
}

//! Lists to BPF. Also compiled into the build script (`vmm/build.rs`),
//! which runs it once per build so that a VMM start only loads the result.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::lists::Rule;

/// The filter of `rules`: listed calls (with their argument conditions)
/// allowed, every other call gets `mismatch`.
pub fn compile(rules: &[(i64, Rule)], mismatch: SeccompAction) -> Result<BpfProgram, String> {
    let bad = |e: seccompiler::BackendError| e.to_string();
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut always = std::collections::BTreeSet::new();
    for (nr, rule) in rules {
        let conditions = match rule {
            Rule::Any => {
                always.insert(*nr);
                continue;
            }
            Rule::ArgEq(arg, value) => {
                vec![
                    SeccompCondition::new(*arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, *value)
                        .map_err(bad)?,
                ]
            }
            Rule::ArgMasked(arg, mask, value) => vec![SeccompCondition::new(
                *arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(u64::from(*mask)),
                *value,
            )
            .map_err(bad)?],
        };
        map.entry(*nr)
            .or_default()
            .push(SeccompRule::new(conditions).map_err(bad)?);
    }
    // No rules: the call is allowed whatever its arguments.
    for nr in always {
        map.insert(nr, Vec::new());
    }
    let filter =
        SeccompFilter::new(map, mismatch, SeccompAction::Allow, TargetArch::x86_64).map_err(bad)?;
    BpfProgram::try_from(filter).map_err(bad)
}

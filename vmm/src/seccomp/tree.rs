//! The filters' code: a binary search over the syscall number, then a
//! call's argument checks.
//!
//! seccompiler lays a filter out as one chain that compares the number
//! with every listed call in turn, so a call pays for its position (a
//! call that is not listed walks all ~700 instructions of the process
//! filter), and so does the kernel, which runs a new filter once per
//! syscall number when it is installed, to cache the calls it always
//! allows. Here the number is found in about 2 log2(n) comparisons,
//! then a call with argument rules jumps to its checks.
//!
//! The lists use two kinds of check (a 64-bit argument equal to a value,
//! the low 32 bits of one masked), each a handful of instructions, so
//! the code is emitted here directly: seccompiler's compiler is the
//! oracle of the unit tests instead, which run both filters in a BPF
//! interpreter over every syscall number and the argument values the
//! rules name, and require the same verdict. (Compiling with it cost
//! 0.3 ms of a cold start natively, most of it its code's first run.)

use std::collections::BTreeMap;

use seccompiler::{sock_filter, BpfProgram};

use super::Rule;

// Classic BPF opcodes (linux/bpf_common.h): class | size/op | source.
/// BPF_LD | BPF_W | BPF_ABS
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K
const BPF_AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JA
const BPF_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K
const BPF_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGE | BPF_K
const BPF_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K
const BPF_RET_K: u16 = 0x06;
/// `struct seccomp_data`: the syscall number, the arch, the arguments.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;
/// AUDIT_ARCH_X86_64 (linux/audit.h).
pub(super) const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_LEN: usize = 4096;
/// Calls compared one by one at the bottom of the tree.
const LEAF: usize = 3;

/// Compiles `rules` (a call is allowed when one of its rules holds) for
/// x86-64; any other call returns `deny`, a call of another arch kills
/// the process.
pub(super) fn compile(rules: &[(i64, Rule)], deny: u32) -> Result<BpfProgram, String> {
    // Per call: None, always allowed; or the rules of which one must hold.
    let mut by_nr: BTreeMap<u32, Option<Vec<Rule>>> = BTreeMap::new();
    for &(nr, rule) in rules {
        let nr = u32::try_from(nr).map_err(|_| format!("syscall number {nr} out of range"))?;
        let entry = by_nr.entry(nr).or_insert_with(|| Some(Vec::new()));
        match (rule, entry) {
            (Rule::Any, entry) => *entry = None,
            (_, None) => {}
            (rule, Some(list)) => list.push(rule),
        }
    }
    if by_nr.is_empty() {
        return Err("no call is allowed".into());
    }

    // (number, index into `chains` when its arguments are checked)
    let mut calls = Vec::with_capacity(by_nr.len());
    let mut chains = Vec::new();
    for (nr, rules) in by_nr {
        match rules {
            None => calls.push((nr, None)),
            Some(rules) => {
                calls.push((nr, Some(chains.len())));
                chains.push(chain(&rules, deny)?);
            }
        }
    }

    let mut out = vec![
        stmt(BPF_LD_W_ABS, ARCH_OFFSET),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, NR_OFFSET),
    ];
    let (tree, jumps) = subtree(&calls, deny);
    let tree_at = out.len();
    out.extend(tree);
    let mut chain_at = Vec::with_capacity(chains.len());
    for chain in chains {
        chain_at.push(out.len());
        out.extend(chain);
    }
    for (at, chain) in jumps {
        let at = tree_at + at;
        // Forward only, as classic BPF requires: the chains follow the tree.
        out[at].k = u32::try_from(chain_at[chain] - (at + 1)).map_err(|e| e.to_string())?;
    }
    if out.len() > MAX_LEN {
        return Err(format!(
            "{} instructions, over the kernel's {MAX_LEN}",
            out.len()
        ));
    }
    Ok(out)
}

/// A call's argument checks: each rule in turn, allow at the first that
/// holds, `deny` after the last.
fn chain(rules: &[Rule], deny: u32) -> Result<BpfProgram, String> {
    let mut code = Vec::new();
    for &rule in rules {
        match rule {
            Rule::Any => code.push(stmt(BPF_RET_K, RET_ALLOW)),
            // The high half, then the low half (little-endian words);
            // a mismatch goes on to the next rule.
            Rule::ArgEq(arg, value) => {
                let low = arg_offset(arg)?;
                code.extend([
                    stmt(BPF_LD_W_ABS, low + 4),
                    jump(BPF_JEQ_K, (value >> 32) as u32, 0, 3),
                    stmt(BPF_LD_W_ABS, low),
                    jump(BPF_JEQ_K, value as u32, 0, 1),
                    stmt(BPF_RET_K, RET_ALLOW),
                ])
            }
            Rule::ArgMasked(arg, mask, value) => {
                let value = u32::try_from(value)
                    .map_err(|_| format!("masked value {value:#x} is over 32 bits"))?;
                code.extend([
                    stmt(BPF_LD_W_ABS, arg_offset(arg)?),
                    stmt(BPF_AND_K, mask),
                    jump(BPF_JEQ_K, value, 0, 1),
                    stmt(BPF_RET_K, RET_ALLOW),
                ])
            }
        }
    }
    code.push(stmt(BPF_RET_K, deny));
    Ok(code)
}

fn arg_offset(arg: u8) -> Result<u32, String> {
    if arg > 5 {
        return Err(format!("argument {arg} (a call has 0 to 5)"));
    }
    Ok(ARGS_OFFSET + 8 * u32::from(arg))
}

/// The search over `calls` (sorted by number), entered with the number
/// in the accumulator. Returns its code and the jumps to argument
/// checks: (instruction, chain) to patch once the chains are placed.
fn subtree(calls: &[(u32, Option<usize>)], deny: u32) -> (BpfProgram, Vec<(usize, usize)>) {
    let mut code = Vec::new();
    let mut jumps = Vec::new();
    if calls.len() <= LEAF {
        for &(nr, chain) in calls {
            code.push(jump(BPF_JEQ_K, nr, 0, 1));
            match chain {
                None => code.push(stmt(BPF_RET_K, RET_ALLOW)),
                Some(chain) => {
                    jumps.push((code.len(), chain));
                    code.push(stmt(BPF_JA, 0));
                }
            }
        }
        code.push(stmt(BPF_RET_K, deny));
        return (code, jumps);
    }
    let (low, high) = calls.split_at(calls.len() / 2);
    let pivot = high[0].0;
    let (low, low_jumps) = subtree(low, deny);
    let (high, high_jumps) = subtree(high, deny);
    match u8::try_from(low.len()) {
        // number >= pivot: over the low half.
        Ok(skip) => code.push(jump(BPF_JGE_K, pivot, skip, 0)),
        // Too far for a conditional jump: through an unconditional one.
        Err(_) => {
            code.push(jump(BPF_JGE_K, pivot, 0, 1));
            code.push(stmt(BPF_JA, low.len() as u32));
        }
    }
    let at = code.len();
    jumps.extend(low_jumps.into_iter().map(|(i, c)| (at + i, c)));
    code.extend(low);
    let at = code.len();
    jumps.extend(high_jumps.into_iter().map(|(i, c)| (at + i, c)));
    code.extend(high);
    (code, jumps)
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

#[cfg(test)]
pub(super) mod bpf {
    //! A classic BPF interpreter for seccomp filters (the instructions
    //! seccompiler and the tree use), for comparing filters.
    use super::*;

    /// What the kernel gives a filter: `struct seccomp_data`.
    #[derive(Debug, Clone, Copy)]
    pub struct Call {
        pub nr: u32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    /// The filter's verdict for `call` and how many instructions it ran.
    pub fn run(prog: &[sock_filter], call: &Call) -> (u32, usize) {
        let mut a: u32 = 0;
        let mut pc = 0;
        let mut steps = 0;
        loop {
            let i = &prog[pc];
            steps += 1;
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    a = match i.k {
                        0 => call.nr,
                        4 => call.arch,
                        k @ 16..=63 if k % 4 == 0 => {
                            let arg = call.args[(k as usize - 16) / 8];
                            if k % 8 == 0 {
                                arg as u32
                            } else {
                                (arg >> 32) as u32
                            }
                        }
                        k => panic!("load of offset {k}"),
                    }
                }
                BPF_AND_K => a &= i.k,
                BPF_JA => pc += i.k as usize,
                BPF_JEQ_K | BPF_JGE_K | 0x25 | 0x45 => {
                    let taken = match i.code {
                        BPF_JEQ_K => a == i.k,
                        BPF_JGE_K => a >= i.k,
                        0x25 => a > i.k,
                        _ => a & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                BPF_RET_K => return (i.k, steps),
                code => panic!("instruction {code:#x} at {}", pc - 1),
            }
        }
    }
}

#[cfg(test)]
pub(super) mod oracle {
    //! seccompiler's filter of the same rules: one linear chain.
    use super::*;
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    pub fn seccompiler_filter(rules: &[(i64, Rule)], deny: SeccompAction) -> BpfProgram {
        let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        let mut always = std::collections::BTreeSet::new();
        for &(nr, rule) in rules {
            let condition = match rule {
                Rule::Any => {
                    always.insert(nr);
                    continue;
                }
                Rule::ArgEq(arg, value) => {
                    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
                }
                Rule::ArgMasked(arg, mask, value) => SeccompCondition::new(
                    arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(u64::from(mask)),
                    value,
                ),
            };
            let rule = SeccompRule::new(vec![condition.unwrap()]).unwrap();
            map.entry(nr).or_default().push(rule);
        }
        for nr in always {
            map.insert(nr, Vec::new());
        }
        let filter =
            SeccompFilter::new(map, deny, SeccompAction::Allow, TargetArch::x86_64).unwrap();
        BpfProgram::try_from(filter).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::bpf::{run, Call};
    use super::oracle::seccompiler_filter;
    use super::*;
    use seccompiler::SeccompAction;

    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    const I386: u32 = 3 | 0x4000_0000;

    #[test]
    fn a_small_filter_matches_seccompilers_on_every_number() {
        let mut rules: Vec<(i64, Rule)> = [0, 1, 3, 7, 60, 231]
            .iter()
            .map(|&nr| (nr, Rule::Any))
            .collect();
        rules.push((16, Rule::ArgEq(1, 0xae80)));
        rules.push((16, Rule::ArgEq(1, 0x1234_0000_5678)));
        rules.push((56, Rule::ArgMasked(0, 0x10000, 0x10000)));
        let linear = seccompiler_filter(&rules, SeccompAction::KillProcess);
        let tree = compile(&rules, KILL).unwrap();
        for nr in (0..600).chain([0x4000_0000, 0x4000_0010, u32::MAX]) {
            for arch in [AUDIT_ARCH_X86_64, I386] {
                for arg in [
                    0,
                    0xae80,
                    0x1234_0000_5678,
                    0x5678,
                    0xae80 | 1 << 40,
                    0x10000,
                    0x10001,
                    1 << 40 | 0x10000,
                ] {
                    for args in [[0, arg, 0, 0, 0, 0], [arg, 0, 0, 0, 0, 0]] {
                        let call = Call { nr, arch, args };
                        assert_eq!(run(&tree, &call).0, run(&linear, &call).0, "{call:?}");
                    }
                }
            }
        }
        let allowed = |nr, args| {
            let call = Call {
                nr,
                arch: AUDIT_ARCH_X86_64,
                args,
            };
            run(&tree, &call).0 == RET_ALLOW
        };
        assert!(allowed(231, [0; 6]) && allowed(16, [0, 0xae80, 0, 0, 0, 0]));
        assert!(allowed(16, [0, 0x1234_0000_5678, 0, 0, 0, 0]));
        assert!(allowed(56, [0x10011, 0, 0, 0, 0, 0]) && !allowed(56, [0x1, 0, 0, 0, 0, 0]));
        assert!(!allowed(16, [0, 0x5678, 0, 0, 0, 0]) && !allowed(2, [0; 6]));
        assert!(!allowed(0x4000_0000, [0; 6]));
        let i386 = Call {
            nr: 0,
            arch: I386,
            args: [0; 6],
        };
        assert_eq!(run(&tree, &i386).0, KILL);
    }

    #[test]
    fn an_always_allowed_call_ignores_its_other_rules() {
        let rules = [(16, Rule::ArgEq(1, 5)), (16, Rule::Any)];
        let tree = compile(&rules, KILL).unwrap();
        let call = Call {
            nr: 16,
            arch: AUDIT_ARCH_X86_64,
            args: [0, 6, 0, 0, 0, 0],
        };
        assert_eq!(run(&tree, &call).0, RET_ALLOW);
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(compile(&[], KILL).is_err());
        assert!(compile(&[(-1, Rule::Any)], KILL).is_err());
        assert!(compile(&[(1, Rule::ArgEq(6, 0))], KILL).is_err());
        assert!(compile(&[(1, Rule::ArgMasked(0, 1, 1 << 32))], KILL).is_err());
    }

    #[test]
    fn a_call_that_is_not_listed_is_refused_in_a_few_steps() {
        let rules: Vec<(i64, Rule)> = (0..300).map(|nr| (nr * 2, Rule::Any)).collect();
        let tree = compile(&rules, KILL).unwrap();
        let worst = (0..1000)
            .map(|nr| {
                let call = Call {
                    nr,
                    arch: AUDIT_ARCH_X86_64,
                    args: [0; 6],
                };
                let (verdict, steps) = run(&tree, &call);
                assert_eq!(verdict == RET_ALLOW, nr % 2 == 0 && nr < 600, "{nr}");
                steps
            })
            .max()
            .unwrap();
        // 4 for the arch check and the load, ~2 per level, a leaf.
        assert!(worst <= 30, "{worst} steps");
    }

    #[test]
    fn far_branches_go_through_an_unconditional_jump() {
        // Enough calls with checks that a low half is over 255 instructions.
        let rules: Vec<(i64, Rule)> = (0..400).map(|nr| (nr, Rule::ArgEq(0, nr as u64))).collect();
        let tree = compile(&rules, KILL).unwrap();
        assert!(tree.iter().any(|i| i.code == BPF_JA && i.k > 255));
        for nr in 0..450u32 {
            for arg0 in [nr as u64, nr as u64 + 1] {
                let call = Call {
                    nr,
                    arch: AUDIT_ARCH_X86_64,
                    args: [arg0, 0, 0, 0, 0, 0],
                };
                let allowed = run(&tree, &call).0 == RET_ALLOW;
                assert_eq!(allowed, nr < 400 && arg0 == nr as u64, "{call:?}");
            }
        }
    }
}

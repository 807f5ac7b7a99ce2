//! The filters' layout: a binary search over the syscall number in front
//! of each call's own argument checks.
//!
//! seccompiler lays a filter out as one chain that compares the number
//! with every listed call in turn, so a call pays for its position (a
//! call that is not listed walks all ~700 instructions of the process
//! filter), and so does the kernel, which runs a new filter once per
//! syscall number when it is installed, to cache the calls it always
//! allows. Here the number is found in about 2 log2(n) comparisons,
//! then a call with argument rules jumps to its checks.
//!
//! Only the dispatch is ours: the arch check, the number load and each
//! call's argument checks are seccompiler's code, taken from a filter
//! compiled for that one call. The unit tests run this layout and
//! seccompiler's in a BPF interpreter over every syscall number and the
//! argument values the rules name, and require the same verdict.

use std::collections::BTreeMap;

use seccompiler::{sock_filter, BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

// Classic BPF opcodes (linux/bpf_common.h): class | size/op | source.
/// BPF_LD | BPF_W | BPF_ABS
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JA
const BPF_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K
const BPF_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGE | BPF_K
const BPF_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K
const BPF_RET_K: u16 = 0x06;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_LEN: usize = 4096;
/// Calls compared one by one at the bottom of the tree.
const LEAF: usize = 3;

/// Compiles `rules` (the calls allowed, each with the argument rules of
/// which one must hold; none: always) for x86-64; anything else gets
/// `mismatch`.
pub(super) fn compile(
    rules: &BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: &SeccompAction,
) -> Result<BpfProgram, String> {
    let deny = u32::from(mismatch.clone());
    let allow = u32::from(SeccompAction::Allow);
    let Some(&first) = rules.keys().next() else {
        return Err("no call is allowed".into());
    };
    let prologue = prologue(first, mismatch)?;

    // (number, index into `chains` when its arguments are checked)
    let mut calls = Vec::with_capacity(rules.len());
    let mut chains = Vec::new();
    for (&nr, rules) in rules {
        let k = u32::try_from(nr).map_err(|_| format!("syscall number {nr} out of range"))?;
        if rules.is_empty() {
            calls.push((k, None));
        } else {
            calls.push((k, Some(chains.len())));
            chains.push(chain(nr, rules, mismatch)?);
        }
    }

    let (tree, jumps) = subtree(&calls, allow, deny);
    let mut out = prologue;
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

/// seccompiler's arch check and syscall number load, from a filter of
/// one always-allowed call: `[arch check][load nr][that call][deny]`.
fn prologue(nr: i64, mismatch: &SeccompAction) -> Result<BpfProgram, String> {
    let one = single(nr, Vec::new(), mismatch)?;
    let load_nr = one.iter().position(|i| i.code == BPF_LD_W_ABS && i.k == 0);
    match load_nr {
        Some(at) => Ok(one[..=at].to_vec()),
        None => Err("seccompiler's filter does not load the syscall number".into()),
    }
}

/// `nr`'s argument checks as seccompiler compiles them: from a filter of
/// that call alone, everything after the number load. It starts with
/// the number compared again (true where we jump to it) and every way
/// out of it ends in an allow or a deny within it.
fn chain(nr: i64, rules: &[SeccompRule], mismatch: &SeccompAction) -> Result<BpfProgram, String> {
    let one = single(nr, rules.to_vec(), mismatch)?;
    let load_nr = one
        .iter()
        .position(|i| i.code == BPF_LD_W_ABS && i.k == 0)
        .ok_or("seccompiler's filter does not load the syscall number")?;
    let chain = one[load_nr + 1..].to_vec();
    match chain.last() {
        Some(last) if last.code == BPF_RET_K => Ok(chain),
        _ => Err(format!(
            "seccompiler's chain for syscall {nr} does not end in a return"
        )),
    }
}

fn single(
    nr: i64,
    rules: Vec<SeccompRule>,
    mismatch: &SeccompAction,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(
        BTreeMap::from([(nr, rules)]),
        mismatch.clone(),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| e.to_string())?;
    BpfProgram::try_from(filter).map_err(|e| e.to_string())
}

/// The search over `calls` (sorted by number), entered with the number
/// in the accumulator. Returns its code and the jumps to argument
/// checks: (instruction, chain) to patch once the chains are placed.
fn subtree(
    calls: &[(u32, Option<usize>)],
    allow: u32,
    deny: u32,
) -> (BpfProgram, Vec<(usize, usize)>) {
    let mut code = Vec::new();
    let mut jumps = Vec::new();
    if calls.len() <= LEAF {
        for &(nr, chain) in calls {
            code.push(jump(BPF_JEQ_K, nr, 0, 1));
            match chain {
                None => code.push(stmt(BPF_RET_K, allow)),
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
    let (low, low_jumps) = subtree(low, allow, deny);
    let (high, high_jumps) = subtree(high, allow, deny);
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
                // ALU AND K
                0x54 => a &= i.k,
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
mod tests {
    use super::bpf::{run, Call};
    use super::*;
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition};

    const X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const I386: u32 = 3 | 0x4000_0000;

    fn eq(arg: u8, value: u64) -> SeccompRule {
        SeccompRule::new(vec![SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::Eq,
            value,
        )
        .unwrap()])
        .unwrap()
    }

    #[test]
    fn a_small_filter_matches_seccompilers_on_every_number() {
        let mut rules = BTreeMap::new();
        for nr in [0, 1, 3, 7, 60, 231] {
            rules.insert(nr, Vec::new());
        }
        rules.insert(16, vec![eq(1, 0xae80), eq(1, 0x1234_0000_5678)]);
        let linear = BpfProgram::try_from(
            SeccompFilter::new(
                rules.clone(),
                SeccompAction::KillProcess,
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .unwrap(),
        )
        .unwrap();
        let tree = compile(&rules, &SeccompAction::KillProcess).unwrap();
        for nr in (0..600).chain([0x4000_0000, 0x4000_0010, u32::MAX]) {
            for arch in [X86_64, I386] {
                for arg1 in [0, 0xae80, 0x1234_0000_5678, 0x5678, 0xae80 | 1 << 40] {
                    let call = Call {
                        nr,
                        arch,
                        args: [0, arg1, 0, 0, 0, 0],
                    };
                    assert_eq!(run(&tree, &call).0, run(&linear, &call).0, "{call:?}");
                }
            }
        }
        let allowed = |nr, arg1| {
            let call = Call {
                nr,
                arch: X86_64,
                args: [0, arg1, 0, 0, 0, 0],
            };
            run(&tree, &call).0 == u32::from(SeccompAction::Allow)
        };
        assert!(allowed(231, 0) && allowed(16, 0xae80) && allowed(16, 0x1234_0000_5678));
        assert!(!allowed(16, 0x5678) && !allowed(2, 0) && !allowed(0x4000_0000, 0));
    }

    #[test]
    fn a_call_that_is_not_listed_is_refused_in_a_few_steps() {
        let rules: BTreeMap<i64, Vec<SeccompRule>> =
            (0..300).map(|nr| (nr * 2, Vec::new())).collect();
        let tree = compile(&rules, &SeccompAction::KillProcess).unwrap();
        let worst = (0..1000)
            .map(|nr| {
                let call = Call {
                    nr,
                    arch: X86_64,
                    args: [0; 6],
                };
                let (verdict, steps) = run(&tree, &call);
                assert_eq!(verdict == 0x7fff_0000, nr % 2 == 0 && nr < 600, "{nr}");
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
        let rules: BTreeMap<i64, Vec<SeccompRule>> =
            (0..250).map(|nr| (nr, vec![eq(0, nr as u64)])).collect();
        let tree = compile(&rules, &SeccompAction::KillProcess).unwrap();
        assert!(tree.iter().any(|i| i.code == BPF_JA && i.k > 255));
        for nr in 0..300u32 {
            for arg0 in [nr as u64, nr as u64 + 1] {
                let call = Call {
                    nr,
                    arch: X86_64,
                    args: [arg0, 0, 0, 0, 0, 0],
                };
                let allowed = run(&tree, &call).0 == 0x7fff_0000;
                assert_eq!(allowed, nr < 250 && arg0 == nr as u64, "{call:?}");
            }
        }
    }
}

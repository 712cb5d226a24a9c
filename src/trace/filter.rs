//! The seccomp-bpf program that makes the kernel stop a traced process only on the
//! calls in `calls::TRACED` (SECCOMP_RET_TRACE) and let every other call through.
//!
//! It checks the architecture first: a call from a foreign ABI (a 32-bit call of a
//! 64-bit process, an x32 number) is trapped so the tracer can report it, since its
//! numbers mean other calls. The program is built once, before fork, as plain data.

use libc::{c_long, sock_filter};

use super::calls::{Gate, DENIED, GATED, TRACED};

#[cfg(target_arch = "x86_64")]
pub(crate) const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
pub(crate) const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// x32 system calls on x86_64 carry this bit in their number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const LD_ABS_W: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
#[cfg(target_arch = "x86_64")]
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

#[derive(Clone, Copy)]
enum Label {
    Allow,
    Trace,
    Deny,
    /// The argument check of `GATED[i]`.
    Gate(usize),
}

/// One instruction with symbolic jump targets (`None` = the next instruction).
struct Op {
    code: u16,
    k: u32,
    jt: Option<Label>,
    jf: Option<Label>,
}

fn op(code: u16, k: u32) -> Op {
    Op {
        code,
        k,
        jt: None,
        jf: None,
    }
}

fn jump(code: u16, k: u32, jt: Option<Label>, jf: Option<Label>) -> Op {
    Op { code, k, jt, jf }
}

/// The filter program.
pub(crate) fn program() -> Vec<sock_filter> {
    let mut ops = vec![
        op(LD_ABS_W, ARCH),
        jump(JEQ, NATIVE_ARCH, None, Some(Label::Trace)),
        op(LD_ABS_W, NR),
    ];
    #[cfg(target_arch = "x86_64")]
    ops.push(jump(JGE, X32_SYSCALL_BIT, Some(Label::Trace), None));
    let number = |nr: &c_long| *nr as u32;
    ops.extend(
        TRACED
            .iter()
            .map(|nr| jump(JEQ, number(nr), Some(Label::Trace), None)),
    );
    ops.extend(
        DENIED
            .iter()
            .map(|nr| jump(JEQ, number(nr), Some(Label::Deny), None)),
    );
    ops.extend(
        GATED
            .iter()
            .enumerate()
            .map(|(i, (nr, _, _))| jump(JEQ, number(nr), Some(Label::Gate(i)), None)),
    );
    ops.push(op(RET, libc::SECCOMP_RET_ALLOW));
    // BPF jumps only forward: the argument checks come before the shared returns.
    let mut gates = Vec::new();
    for (_, argument, gate) in GATED {
        gates.push(ops.len());
        // The low 32 bits of the argument (little-endian on both supported targets).
        ops.push(op(LD_ABS_W, ARGS + 8 * argument));
        ops.push(match *gate {
            Gate::TraceIfAny(mask) => jump(JSET, mask, Some(Label::Trace), Some(Label::Allow)),
            Gate::AllowIfAny(mask) => jump(JSET, mask, Some(Label::Allow), Some(Label::Trace)),
            Gate::TraceIfEqual(value) => jump(JEQ, value, Some(Label::Trace), Some(Label::Allow)),
        });
    }
    let allow = ops.len();
    ops.push(op(RET, libc::SECCOMP_RET_ALLOW));
    let trace = ops.len();
    ops.push(op(RET, libc::SECCOMP_RET_TRACE));
    let deny = ops.len();
    ops.push(op(RET, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));

    let target = |label: Label| match label {
        Label::Allow => allow,
        Label::Trace => trace,
        Label::Deny => deny,
        Label::Gate(i) => gates[i],
    };
    let offset = |at: usize, label: Option<Label>| -> u8 {
        let Some(label) = label else { return 0 };
        let distance = target(label) - (at + 1);
        u8::try_from(distance).expect("a seccomp jump spans at most 255 instructions")
    };
    ops.iter()
        .enumerate()
        .map(|(at, o)| sock_filter {
            code: o.code,
            jt: offset(at, o.jt),
            jf: offset(at, o.jf),
            k: o.k,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trapped_call_is_decoded() {
        let gated = GATED.iter().map(|(nr, _, _)| nr);
        for nr in TRACED.iter().chain(gated) {
            assert!(
                super::super::calls::decode(*nr, [0; 6]).is_some(),
                "call {nr} is trapped but not decoded"
            );
        }
    }

    #[test]
    fn the_program_fits_and_jumps_forward() {
        let program = program();
        assert!(program.len() < 255);
        assert_eq!(program.last().map(|i| i.code), Some(RET));
    }
}

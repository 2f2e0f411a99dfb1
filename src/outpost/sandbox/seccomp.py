"""The seccomp filter of every bwrap sandbox: a default-allow deny-list, written as classic BPF.

bwrap installs the program with `--seccomp FD` just before it executes the command (and in its own pid 1),
so the filter binds the command and everything it starts. The program, in order:

1. kills the process unless the syscall comes through the native x86_64 ABI: i386 (`int 0x80`) and x32
   calls have their own numbers and would slip past every rule written for x86_64 numbers;
2. answers `clone3` with ENOSYS: its flags sit in a struct in memory that BPF cannot read, and glibc falls
   back to `clone` on ENOSYS, whose flags BPF can check;
3. answers EPERM to the syscalls in `DENIED_SYSCALLS` (kernel attack surface a coding agent does not need);
4. answers EPERM to `clone` and `unshare` asking for a new namespace, EAFNOSUPPORT to `socket` and
   `socketpair` outside `ALLOWED_SOCKET_FAMILIES`, and EPERM to `ioctl` with TIOCSTI or TIOCLINUX;
5. allows everything else.

The program is built for x86_64 Linux only. Numbers and layouts come from the kernel's uapi headers:
`linux/filter.h` and `linux/bpf_common.h` (instructions), `linux/seccomp.h` (`struct seccomp_data`, return
actions), `linux/audit.h` (architectures), `linux/sched.h` (clone flags), `asm-generic/ioctls.h`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Iterable
from typing import NamedTuple

from outpost.errors import SandboxError

# x86_64 syscall numbers, as in the kernel's arch/x86/entry/syscalls/syscall_64.tbl (the uapi header
# asm/unistd_64.h is generated from it). Numbers never change once assigned.
SYSCALL_NUMBERS: dict[str, int] = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "ustat": 136, "sysfs": 139, "vhangup": 153,
    "pivot_root": 155, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176, "quotactl": 179,
    "nfsservctl": 180, "lookup_dcookie": 212, "mbind": 237, "set_mempolicy": 238, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "migrate_pages": 256, "move_pages": 279,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "quotactl_fd": 443, "open_tree_attr": 467,
    # The syscalls whose arguments the filter inspects, and clone3.
    "ioctl": 16, "socket": 41, "socketpair": 53, "clone": 56, "unshare": 272, "clone3": 435,
}  # fmt: skip

# Answered with EPERM whatever their arguments.
DENIED_SYSCALLS: tuple[str, ...] = (
    # Large, often-exploited kernel interfaces no build or test needs.
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd",
    # The kernel keyring: shared kernel state with a history of bugs, and nothing a build needs.
    "keyctl", "add_key", "request_key",
    # Loading kernels and modules.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    # File handles open files by inode, past the mount tree (Docker's "shocker" escape).
    "open_by_handle_at", "name_to_handle_at",
    # Changing the mount tree (old and new mount APIs) or joining another namespace.
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "open_tree_attr", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "setns",
    # Host administration.
    "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "quotactl_fd", "lookup_dcookie", "vhangup",
    # Reading or writing other processes' memory (relax if an agent needs a debugger).
    "ptrace", "process_vm_readv", "process_vm_writev",
    # NUMA memory policy: no use in a sandbox, a history of bugs.
    "mbind", "migrate_pages", "move_pages", "set_mempolicy",
    # Obsolete or raw-hardware calls.
    "uselib", "ustat", "sysfs", "nfsservctl", "iopl", "ioperm",
)  # fmt: skip

# Every namespace a process could create.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080  # unshare() only: in clone()'s flags this bit belongs to the exit signal
CLONE_NEW_FLAGS = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)
# Local sockets, IP (loopback and the egress proxy) and netlink (getifaddrs, `ip addr`). Everything else
# (AF_VSOCK to the hypervisor, AF_PACKET, AF_ALG, AF_KEY, Bluetooth, ...) is kernel surface the sandbox
# has no use for. (A possible tightening: netlink's NETLINK_ROUTE protocol only.)
ALLOWED_SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
TIOCSTI = 0x5412  # pushes bytes into a terminal's input: commands typed into an inherited terminal
TIOCLINUX = 0x541C  # the Linux console's multiplexer, which can also paste into it

AUDIT_ARCH_X86_64 = 0xC000003E  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
BPF_MAXINSNS = 4096  # the kernel refuses longer programs

# Classic BPF opcodes, composed as instruction class | size or operation | operand source.
BPF_LD, BPF_JMP, BPF_RET = 0x00, 0x05, 0x06
BPF_W, BPF_ABS = 0x00, 0x20
BPF_JEQ, BPF_JSET, BPF_K = 0x10, 0x40, 0x00
BPF_LD_W_ABS = BPF_LD | BPF_W | BPF_ABS  # A = the 32-bit word at offset k of struct seccomp_data
BPF_JMP_JEQ_K = BPF_JMP | BPF_JEQ | BPF_K  # if A == k
BPF_JMP_JSET_K = BPF_JMP | BPF_JSET | BPF_K  # if A & k
BPF_RET_K = BPF_RET | BPF_K  # return k

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
NR_OFFSET = 0
ARCH_OFFSET = 4
ARGS_OFFSET = 16
_MAX_JUMP = 255  # jump offsets are one unsigned byte


class Instruction(NamedTuple):
    """One `struct sock_filter`: a jump goes to the instruction after this one plus `jt` or `jf`."""

    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return struct.pack("<HBBI", self.code, self.jt, self.jf, self.k)


def build_filter() -> bytes:
    """The seccomp program: `sock_filter` structs packed little-endian, ready for `bwrap --seccomp`.

    Deterministic: the same bytes on every call. See the module docstring for the rules.
    """
    return b"".join(instruction.pack() for instruction in build_instructions())


def filter_memfd() -> int:
    """A new memfd holding `build_filter()`, positioned at 0 and sealed so nobody can change it.

    The fd is close-on-exec: pass it in `pass_fds` and as `bwrap --seccomp FD`, and close it after the
    spawn. bwrap reads it to the end, so each spawn needs a memfd of its own. Raises SandboxError on a host
    that is not x86_64 and OSError when the memfd cannot be made.
    """
    machine = os.uname().machine
    if machine != "x86_64":
        raise SandboxError(f"the sandbox's seccomp filter is written for x86_64, not {machine}")
    program = memoryview(build_filter())
    fd = os.memfd_create("outpost-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        while program:
            program = program[os.write(fd, program) :]
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


def build_instructions() -> list[Instruction]:
    """The program as instructions (what `build_filter` packs)."""
    program = [*_native_abi_only(), *_refuse_syscall(SYSCALL_NUMBERS["clone3"], errno.ENOSYS)]
    for name in DENIED_SYSCALLS:
        program += _refuse_syscall(SYSCALL_NUMBERS[name], errno.EPERM)
    program += _check_argument("clone", 0, _refuse_bits(CLONE_NEW_FLAGS, errno.EPERM))
    program += _check_argument("unshare", 0, _refuse_bits(CLONE_NEW_FLAGS | CLONE_NEWTIME, errno.EPERM))
    for name in ("socket", "socketpair"):  # socketpair() creates sockets of a family too
        program += _check_argument(name, 0, _allow_only(ALLOWED_SOCKET_FAMILIES, errno.EAFNOSUPPORT))
    program += _check_argument("ioctl", 1, _refuse_values((TIOCSTI, TIOCLINUX), errno.EPERM))
    program.append(_ret(SECCOMP_RET_ALLOW))
    if len(program) > BPF_MAXINSNS:
        raise ValueError(f"the seccomp program has {len(program)} instructions, over {BPF_MAXINSNS}")
    return program


def _native_abi_only() -> list[Instruction]:
    """Kill on a foreign architecture or an x32 syscall; leaves the syscall number in A."""
    return [
        _load(ARCH_OFFSET),
        _jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, jt=1, jf=0),
        _ret(SECCOMP_RET_KILL_PROCESS),
        _load(NR_OFFSET),
        # x32 syscalls arrive with arch x86_64 and this bit set in the number. (It also catches nr -1,
        # which only a tracer uses, to skip a call, and ptrace is denied.)
        _jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, jt=0, jf=1),
        _ret(SECCOMP_RET_KILL_PROCESS),
    ]


def _refuse_syscall(nr: int, error: int) -> list[Instruction]:
    """With the syscall number in A: fail syscall `nr` with `error`, fall through otherwise."""
    return [_jump(BPF_JMP_JEQ_K, nr, jt=0, jf=1), _ret(SECCOMP_RET_ERRNO | error)]


def _check_argument(name: str, index: int, verdict: list[Instruction]) -> list[Instruction]:
    """With the syscall number in A: for syscall `name`, load the low 32 bits of argument `index` and run
    `verdict` (which always returns); other syscalls skip the block with A unchanged.

    The low half is the whole argument for every check here: the kernel declares socket's family an int
    and ioctl's request an unsigned int, so it drops the high half itself (a filter comparing all 64 bits
    is bypassed by setting a high bit; CVE-2019-10063 in Flatpak's TIOCSTI rule). Every clone flag is in
    the low half: clone() keeps only that half, and unshare() fails with EINVAL on any other bit.
    """
    load_arg = _load(ARGS_OFFSET + 8 * index)  # little-endian: the low half comes first
    return [_jump(BPF_JMP_JEQ_K, SYSCALL_NUMBERS[name], jt=0, jf=len(verdict) + 1), load_arg, *verdict]


def _refuse_bits(mask: int, error: int) -> list[Instruction]:
    """Fail with `error` when the argument in A has any bit of `mask` set; allow otherwise."""
    return [
        _jump(BPF_JMP_JSET_K, mask, jt=0, jf=1),
        _ret(SECCOMP_RET_ERRNO | error),
        _ret(SECCOMP_RET_ALLOW),
    ]


def _allow_only(values: Iterable[int], error: int) -> list[Instruction]:
    """Allow when the argument in A is one of `values`; fail with `error` otherwise."""
    return _match(values, on_match=SECCOMP_RET_ALLOW, otherwise=SECCOMP_RET_ERRNO | error)


def _refuse_values(values: Iterable[int], error: int) -> list[Instruction]:
    """Fail with `error` when the argument in A is one of `values`; allow otherwise."""
    return _match(values, on_match=SECCOMP_RET_ERRNO | error, otherwise=SECCOMP_RET_ALLOW)


def _match(values: Iterable[int], on_match: int, otherwise: int) -> list[Instruction]:
    """Return `on_match` when A equals one of `values`, else `otherwise`."""
    wanted = list(values)
    # Every comparison jumps to the last instruction (`on_match`) on equality.
    tests = [_jump(BPF_JMP_JEQ_K, v, jt=len(wanted) - i, jf=0) for i, v in enumerate(wanted)]
    return [*tests, _ret(otherwise), _ret(on_match)]


def _load(offset: int) -> Instruction:
    return Instruction(BPF_LD_W_ABS, 0, 0, offset)


def _jump(code: int, k: int, jt: int, jf: int) -> Instruction:
    if not (0 <= jt <= _MAX_JUMP and 0 <= jf <= _MAX_JUMP):
        raise ValueError(f"jump offset out of range: jt={jt}, jf={jf}")
    return Instruction(code, jt, jf, k)


def _ret(action: int) -> Instruction:
    return Instruction(BPF_RET_K, 0, 0, action)

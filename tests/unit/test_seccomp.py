"""The seccomp program's structure, and its verdicts on a small classic-BPF interpreter (the real kernel
runs it in tests/security/test_seccomp_filter.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
from functools import cache
from pathlib import Path

import pytest

from outpost.sandbox.seccomp import (
    ALLOWED_SOCKET_FAMILIES,
    ARCH_OFFSET,
    AUDIT_ARCH_X86_64,
    BPF_JMP_JEQ_K,
    BPF_JMP_JSET_K,
    BPF_LD_W_ABS,
    BPF_MAXINSNS,
    BPF_RET_K,
    CLONE_NEW_FLAGS,
    CLONE_NEWTIME,
    CLONE_NEWUSER,
    DENIED_SYSCALLS,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    SYSCALL_NUMBERS,
    TIOCLINUX,
    TIOCSTI,
    Instruction,
    build_filter,
    filter_memfd,
)
from tests.requirements import require

AUDIT_ARCH_I386 = 0x40000003
UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
EPERM = SECCOMP_RET_ERRNO | errno.EPERM
EAFNOSUPPORT = SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT
NR = SYSCALL_NUMBERS
HIGH_BIT = 1 << 32
FIONREAD = 0x541B
THREAD_FLAGS = 0x003D0F00  # CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
FORK_FLAGS = 0x01200011  # CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID|SIGCHLD, as glibc's fork() passes
# The EPERM list of the sandbox design (reference/sandbox.md, section 3.3), kept here as the specification.
DESIGN_EPERM = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "open_by_handle_at", "name_to_handle_at", "mount", "umount2", "pivot_root", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "setns", "swapon", "swapoff",
    "reboot", "syslog", "acct", "quotactl", "lookup_dcookie", "vhangup", "ptrace", "process_vm_readv",
    "process_vm_writev", "mbind", "migrate_pages", "move_pages", "set_mempolicy", "uselib", "ustat", "sysfs",
    "nfsservctl", "iopl", "ioperm",
)  # fmt: skip


@cache
def decoded() -> list[Instruction]:
    program = build_filter()
    return [Instruction(*fields) for fields in struct.iter_unpack("<HBBI", program)]


def verdict(nr: int, args: tuple[int, ...] = (), arch: int = AUDIT_ARCH_X86_64) -> int:
    """Run the packed program on one `struct seccomp_data`, as the kernel would."""
    padded = [a & (2**64 - 1) for a in (*args, 0, 0, 0, 0, 0, 0)[:6]]
    data = struct.pack("<II8x6Q", nr & 0xFFFFFFFF, arch, *padded)
    program, pc, accumulator = decoded(), 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == BPF_LD_W_ABS:
            accumulator, pc = struct.unpack_from("<I", data, k)[0], pc + 1
        elif code == BPF_JMP_JEQ_K:
            pc += 1 + (jt if accumulator == k else jf)
        elif code == BPF_JMP_JSET_K:
            pc += 1 + (jt if accumulator & k else jf)
        elif code == BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc}")


def test_the_program_is_whole_instructions_within_the_kernels_limit() -> None:
    program = build_filter()
    assert len(program) % 8 == 0
    assert 0 < len(program) // 8 <= BPF_MAXINSNS


def test_the_program_is_the_same_on_every_build() -> None:
    assert build_filter() == build_filter()


def test_the_architecture_is_checked_first_and_a_mismatch_kills() -> None:
    load_arch, compare, kill = decoded()[:3]
    assert load_arch == Instruction(BPF_LD_W_ABS, 0, 0, ARCH_OFFSET)
    assert (compare.code, compare.k, compare.jt, compare.jf) == (BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0)
    assert kill == Instruction(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS)


def test_every_jump_lands_inside_the_program_and_it_ends_in_a_return() -> None:
    program = decoded()
    for pc, (code, jt, jf, _) in enumerate(program):
        if code in (BPF_JMP_JEQ_K, BPF_JMP_JSET_K):
            assert pc + 1 + max(jt, jf) < len(program)
    assert program[-1] == Instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)


@pytest.mark.parametrize("name", [*DENIED_SYSCALLS, "clone", "clone3", "unshare", "socket", "ioctl"])
def test_every_listed_syscall_is_compared_against(name: str) -> None:
    compared = {k for code, _, _, k in decoded() if code == BPF_JMP_JEQ_K}
    assert NR[name] in compared


def test_the_designs_eperm_list_is_denied() -> None:
    assert set(DESIGN_EPERM) <= set(DENIED_SYSCALLS)


@pytest.mark.parametrize("name", sorted({*DENIED_SYSCALLS, *DESIGN_EPERM}))
def test_denied_syscalls_fail_with_eperm(name: str) -> None:
    assert verdict(NR[name]) == EPERM


@pytest.mark.parametrize("name", ["read", "write", "getpid", "execve", "mmap", "exit_group"])
def test_ordinary_syscalls_are_allowed(name: str) -> None:
    ordinary = {"read": 0, "write": 1, "mmap": 9, "getpid": 39, "execve": 59, "exit_group": 231}
    assert verdict(ordinary[name]) == SECCOMP_RET_ALLOW


def test_every_unlisted_syscall_number_is_allowed() -> None:
    listed = set(SYSCALL_NUMBERS.values())
    refused = [nr for nr in range(600) if nr not in listed and verdict(nr) != SECCOMP_RET_ALLOW]
    assert refused == []


def test_clone3_fails_with_enosys_so_glibc_falls_back_to_clone() -> None:
    assert verdict(NR["clone3"]) == SECCOMP_RET_ERRNO | errno.ENOSYS


@pytest.mark.parametrize("arch", [AUDIT_ARCH_I386, 0, 0xC00000B7])  # i386, nonsense, aarch64
def test_other_architectures_are_killed_even_for_allowed_numbers(arch: int) -> None:
    assert verdict(39, arch=arch) == SECCOMP_RET_KILL_PROCESS


@pytest.mark.parametrize("nr", [0x40000000 | 39, 0x40000000 | 512, 0xFFFFFFFF])
def test_x32_syscall_numbers_are_killed(nr: int) -> None:
    assert verdict(nr) == SECCOMP_RET_KILL_PROCESS


@pytest.mark.parametrize("name", ["clone", "unshare"])
def test_each_new_namespace_flag_is_refused(name: str) -> None:
    bits = [1 << i for i in range(32) if CLONE_NEW_FLAGS & 1 << i]
    assert len(bits) == 7
    assert [verdict(NR[name], (bit | 17,)) for bit in bits] == [EPERM] * 7


@pytest.mark.parametrize("flags", [THREAD_FLAGS, FORK_FLAGS, FORK_FLAGS | HIGH_BIT])
def test_clone_for_threads_and_forks_is_allowed(flags: int) -> None:
    assert verdict(NR["clone"], (flags, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW


def test_the_newtime_bit_is_refused_for_unshare_only() -> None:
    # In clone()'s flags that bit is part of the exit signal, which the kernel validates itself.
    assert verdict(NR["unshare"], (CLONE_NEWTIME,)) == EPERM
    assert verdict(NR["clone"], (CLONE_NEWTIME,)) == SECCOMP_RET_ALLOW


def test_namespace_flags_in_other_arguments_do_not_matter() -> None:
    assert verdict(NR["clone"], (17, CLONE_NEWUSER, CLONE_NEWUSER)) == SECCOMP_RET_ALLOW


@pytest.mark.parametrize("name", ["socket", "socketpair"])
def test_only_local_ip_and_netlink_socket_families_are_allowed(name: str) -> None:
    answers = {family: verdict(NR[name], (family, 1, 0)) for family in range(64)}
    allowed = {family for family, answer in answers.items() if answer == SECCOMP_RET_ALLOW}
    assert allowed == set(ALLOWED_SOCKET_FAMILIES)
    assert {answers[f] for f in answers if f not in allowed} == {EAFNOSUPPORT}


def test_socket_families_are_judged_on_the_int_the_kernel_reads() -> None:
    assert verdict(NR["socket"], (2 | HIGH_BIT, 1, 0)) == SECCOMP_RET_ALLOW
    assert verdict(NR["socket"], (40 | HIGH_BIT, 1, 0)) == EAFNOSUPPORT


@pytest.mark.parametrize("request_", [TIOCSTI, TIOCLINUX, TIOCSTI | HIGH_BIT, TIOCLINUX | 0xFF << 32])
def test_terminal_injection_ioctls_are_refused(request_: int) -> None:
    assert verdict(NR["ioctl"], (0, request_, 0)) == EPERM


@pytest.mark.parametrize("args", [(0, FIONREAD, 0), (TIOCSTI, FIONREAD, 0), (0, 0x5401, TIOCSTI)])
def test_other_ioctls_are_allowed(args: tuple[int, ...]) -> None:
    assert verdict(NR["ioctl"], args) == SECCOMP_RET_ALLOW


def test_syscall_numbers_match_the_systems_header() -> None:
    require(None if UNISTD_64.exists() else "the kernel headers (linux-libc-dev) are not installed")
    header = dict(re.findall(r"#define __NR_(\w+) (\d+)", UNISTD_64.read_text()))
    known = {name: nr for name, nr in SYSCALL_NUMBERS.items() if name in header}
    assert known == {name: int(header[name]) for name in known}
    assert len(known) >= len(SYSCALL_NUMBERS) - 1  # open_tree_attr (Linux 6.15) is newer than some headers


def test_the_memfd_holds_the_program_from_offset_zero_sealed_and_close_on_exec() -> None:
    fd = filter_memfd()
    try:
        assert os.read(fd, 1 << 20) == build_filter()
        assert not os.get_inheritable(fd)
        wanted = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & wanted == wanted
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"\0" * 8, 0)
    finally:
        os.close(fd)


def test_each_memfd_is_new() -> None:
    first, second = filter_memfd(), filter_memfd()
    try:
        assert first != second
        assert os.read(second, 1 << 20) == build_filter()
    finally:
        os.close(first)
        os.close(second)

"""A tiny eBPF assembler: instructions as values, encoded to the kernel's
``struct bpf_insn`` (pure: values in, bytes out).

No compiler is needed for the express lane's few dozen instructions, so the
program is written here as Python calls.  Encoding per
``include/uapi/linux/bpf.h`` and ``bpf_common.h`` (and
``Documentation/bpf/standardization/instruction-set.rst``): each instruction
is 8 bytes in the host's byte order — opcode (u8), ``dst_reg:4 |
src_reg:4`` (u8), offset (s16), immediate (s32).  This encodes the
little-endian layout (x86-64, arm64: dst in the low nibble);
:mod:`proxy.bpf_lane` loads nothing on a big-endian host.

Jumps take a label instead of an offset; :func:`assemble` resolves them
(an offset counts instructions after the jump).  Only what the lane's
program needs is here: 64-bit ALU, 32-bit and 64-bit conditional jumps,
loads and stores of memory, helper calls, exit.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable

# instruction classes, include/uapi/linux/bpf_common.h (JMP32, ALU64: bpf.h)
LDX = 0x01
ST = 0x02
STX = 0x03
JMP = 0x05
JMP32 = 0x06
ALU64 = 0x07
# sizes and modes, bpf_common.h (DW: bpf.h)
W = 0x00
H = 0x08
B = 0x10
DW = 0x18
MEM = 0x60
# operand source, bpf_common.h
K = 0x00
X = 0x08
# ALU operations, bpf_common.h (MOV: bpf.h)
ADD = 0x00
AND = 0x50
RSH = 0x70
MOV = 0xB0
# jump operations, bpf_common.h (JNE, CALL, EXIT: bpf.h)
JA = 0x00
JEQ = 0x10
JSET = 0x40
JNE = 0x50
CALL = 0x80
EXIT = 0x90

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
"""Registers: R0 return value, R1-R5 arguments (clobbered by calls), R6-R9
kept across calls, R10 the read-only frame pointer."""

SIZES = {1: B, 2: H, 4: W, 8: DW}

_INSN = struct.Struct("<BBhi")


class AsmError(ValueError):
    """A program that cannot be encoded (an unknown label, a value out of range)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Insn:
    """One instruction; ``target`` is a label a jump goes to (resolved into
    ``off`` by :func:`assemble`)."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Label:
    """A place in the program that jumps name."""

    name: str


Item = Insn | Label


def mov_imm(dst: int, imm: int) -> Insn:
    """``dst = imm`` (64-bit, the immediate sign-extended)."""
    return Insn(ALU64 | MOV | K, dst, imm=imm)


def mov_reg(dst: int, src: int) -> Insn:
    """``dst = src``."""
    return Insn(ALU64 | MOV | X, dst, src)


def add_imm(dst: int, imm: int) -> Insn:
    """``dst += imm`` (64-bit)."""
    return Insn(ALU64 | ADD | K, dst, imm=imm)


def and_imm(dst: int, imm: int) -> Insn:
    """``dst &= imm`` (64-bit)."""
    return Insn(ALU64 | AND | K, dst, imm=imm)


def rsh_imm(dst: int, imm: int) -> Insn:
    """``dst >>= imm`` (64-bit, logical)."""
    return Insn(ALU64 | RSH | K, dst, imm=imm)


def load(size: int, dst: int, src: int, off: int) -> Insn:
    """``dst = *(u<size*8> *)(src + off)``, zero-extended."""
    return Insn(LDX | MEM | SIZES[size], dst, src, off)


def store_imm(size: int, dst: int, off: int, imm: int) -> Insn:
    """``*(u<size*8> *)(dst + off) = imm``."""
    return Insn(ST | MEM | SIZES[size], dst, off=off, imm=imm)


def jump_imm(op: int, dst: int, imm: int, target: str, *, wide: bool = True) -> Insn:
    """``if dst <op> imm goto target``; ``wide=False`` compares the low 32
    bits only (a JMP32 instruction), so a full 32-bit constant fits."""
    return Insn((JMP if wide else JMP32) | op | K, dst, imm=imm, target=target)


def goto(target: str) -> Insn:
    return Insn(JMP | JA, target=target)


def call(helper: int) -> Insn:
    """Call kernel helper number ``helper`` (``enum bpf_func_id``, bpf.h)."""
    return Insn(JMP | CALL, imm=helper)


def exit_() -> Insn:
    """Return R0."""
    return Insn(JMP | EXIT)


def signed32(value: int) -> int:
    """A 32-bit pattern as the s32 the immediate field holds."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def assemble(items: Iterable[Item]) -> bytes:
    """Encode ``items``: labels become offsets, each instruction 8 bytes."""
    program = list(items)
    where: dict[str, int] = {}
    count = 0
    for item in program:
        if isinstance(item, Label):
            if item.name in where:
                raise AsmError(f"label {item.name!r} defined twice")
            where[item.name] = count
        else:
            count += 1
    out = bytearray()
    pc = 0
    for item in program:
        if isinstance(item, Label):
            continue
        off = item.off
        if item.target is not None:
            if item.target not in where:
                raise AsmError(f"jump to unknown label {item.target!r}")
            off = where[item.target] - (pc + 1)
        if not (-(1 << 15) <= off < 1 << 15 and -(1 << 31) <= item.imm < 1 << 31):
            raise AsmError(f"instruction {pc}: offset {off} or immediate {item.imm} out of range")
        if not (0 <= item.dst <= R10 and 0 <= item.src <= R10):
            raise AsmError(f"instruction {pc}: no register {item.dst} or {item.src}")
        out += _INSN.pack(item.code, item.dst | item.src << 4, off, item.imm)
        pc += 1
    return bytes(out)


def decode(program: bytes) -> list[tuple[int, int, int, int, int]]:
    """``(code, dst, src, off, imm)`` per instruction (for tests and logs)."""
    return [
        (code, regs & 0x0F, regs >> 4, off, imm)
        for code, regs, off, imm in _INSN.iter_unpack(program)
    ]

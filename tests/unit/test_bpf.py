"""The express lane's eBPF assembler and program, without a kernel: known
encodings, where the constants land, and the program run on frames by a
small interpreter of the instructions it uses (so the matching, the MAC
rewrite and the redirect are checked without root)."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from proxy import bpf_asm as a
from proxy import bpf_prog, wire

MASK64 = (1 << 64) - 1
CTX = 0x1000
STACK_TOP = 0x100000
"""R10 in the interpreter; the stack is the 512 bytes below it."""
CLIENT_MAC = bytes.fromhex("020000000001")
FRONT_MAC = bytes.fromhex("02000000000a")
BACK_MAC = bytes.fromhex("02000000000b")
SERVER_MAC = bytes.fromhex("020000000002")
V4 = (("192.0.2.1", 40000), ("198.51.100.1", 7007))
V6 = (("2001:db8:1::1", 40000), ("2001:db8:2::1", 7007))


def direction(ends: tuple[tuple[str, int], tuple[str, int]]) -> bpf_prog.Direction:
    return bpf_prog.Direction(ends[0], ends[1], SERVER_MAC, BACK_MAC, 5)


@dataclasses.dataclass
class Run:
    """One program run: its return value, the frame after it, the redirect."""

    result: int
    frame: bytes
    redirect: tuple[int, int] | None = None


def _alu(code: int, value: int, operand: int) -> int:
    op = code & 0xF0
    if op == a.MOV:
        return operand
    if op == a.ADD:
        return value + operand
    if op == a.AND:
        return value & operand
    if op == a.RSH:
        return value >> operand
    raise AssertionError(f"ALU op {op:#x} not interpreted")


def _jumps(code: int, value: int, imm: int) -> bool:
    op = code & 0xF0
    if code & 0x07 == a.JMP32:
        value, imm = value & 0xFFFFFFFF, imm & 0xFFFFFFFF
    else:
        imm &= MASK64
    return {
        a.JA: True,
        a.JEQ: value == imm,
        a.JNE: value != imm,
        a.JSET: bool(value & imm),
    }[op]


def run(program: bytes, frame: bytes, vlan: bool = False) -> Run:
    """Interpret ``program`` on ``frame`` as cls_bpf would run it."""
    regs = [0] * 11
    regs[a.R1], regs[a.R10] = CTX, STACK_TOP
    stack = bytearray(512)
    packet = bytearray(frame)
    out = Run(0, b"")

    def memory(addr: int, size: int) -> memoryview:
        offset = addr - (STACK_TOP - 512)
        assert offset >= 0 and offset + size <= 512, f"stack access at {addr - STACK_TOP}"
        assert addr % size == 0, f"unaligned stack access at {addr - STACK_TOP}"
        return memoryview(stack)[offset : offset + size]

    def helper(number: int) -> int:
        r1, r2, r3, r4 = regs[1:5]
        assert r1 == CTX or number == bpf_prog.BPF_FUNC_REDIRECT
        if number == bpf_prog.BPF_FUNC_SKB_LOAD_BYTES:
            if r2 + r4 > len(packet):
                return -14  # -EFAULT
            target = r3 - (STACK_TOP - 512)
            stack[target : target + r4] = packet[r2 : r2 + r4]
            return 0
        if number == bpf_prog.BPF_FUNC_SKB_STORE_BYTES:
            source = r3 - (STACK_TOP - 512)
            packet[r2 : r2 + r4] = stack[source : source + r4]
            return 0
        assert number == bpf_prog.BPF_FUNC_REDIRECT
        out.redirect = (r1, r2)
        return bpf_prog.TC_ACT_REDIRECT

    insns = a.decode(program)
    pc = 0
    for _ in range(1000):
        code, dst, src, off, imm = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == a.ALU64:
            operand = regs[src] if code & a.X else imm
            regs[dst] = _alu(code, regs[dst], operand) & MASK64
        elif cls == a.LDX:
            size = {a.B: 1, a.H: 2, a.W: 4, a.DW: 8}[code & 0x18]
            if regs[src] == CTX:
                assert off == bpf_prog.SKB_VLAN_PRESENT
                regs[dst] = int(vlan)
            else:
                regs[dst] = int.from_bytes(memory(regs[src] + off, size), "little")
        elif cls == a.ST:
            size = {a.B: 1, a.H: 2, a.W: 4, a.DW: 8}[code & 0x18]
            memory(regs[dst] + off, size)[:] = (imm & ((1 << size * 8) - 1)).to_bytes(
                size, "little"
            )
        elif code == a.JMP | a.CALL:
            regs[0] = helper(imm) & MASK64
        elif code == a.JMP | a.EXIT:
            out.result = regs[0] - (1 << 64) if regs[0] >> 63 else regs[0]
            out.frame = bytes(packet)
            return out
        elif _jumps(code, regs[dst], imm):
            pc += off
    raise AssertionError("the program did not exit")


def tcp_frame(ends: tuple[tuple[str, int], tuple[str, int]], flags: int = wire.ACK) -> bytes:
    (src, sport), (dst, dport) = ends
    return wire.build_tcp_frame(
        CLIENT_MAC, FRONT_MAC, src, dst, sport, dport, 1000, 2000, flags, payload=b"data"
    )


# --- the assembler --------------------------------------------------------------------


def test_known_encodings() -> None:
    # the bytes of include/linux/filter.h's BPF_MOV64_IMM(R0, -1), BPF_EXIT_INSN()...
    assert a.assemble([a.mov_imm(a.R0, -1)]) == bytes.fromhex("b7000000ffffffff")
    assert a.assemble([a.exit_()]) == bytes.fromhex("9500000000000000")
    assert a.assemble([a.call(23)]) == bytes.fromhex("8500000017000000")
    # ... BPF_LDX_MEM(BPF_W, R0, R6, 20): dst in the low nibble, src in the high
    assert a.assemble([a.load(4, a.R0, a.R6, 20)]) == bytes.fromhex("6160140000000000")
    assert a.assemble([a.mov_reg(a.R3, a.R10)]) == bytes.fromhex("bfa3000000000000")
    assert a.assemble([a.store_imm(2, a.R10, -70, 0x1234)]) == bytes.fromhex("6a0abaff34120000")
    # JMP32 | JNE | K, JMP | JSET | K
    assert a.assemble([a.jump_imm(a.JNE, a.R0, 1, "x", wide=False), a.Label("x")])[0] == 0x56
    assert a.assemble([a.jump_imm(a.JSET, a.R0, 7, "x"), a.Label("x")])[0] == 0x45


def test_labels_become_offsets_counted_after_the_jump() -> None:
    code = a.assemble(
        [a.goto("end"), a.mov_imm(a.R0, 1), a.mov_imm(a.R0, 2), a.Label("end"), a.exit_()]
    )
    assert a.decode(code)[0][3] == 2
    back = a.assemble([a.Label("top"), a.mov_imm(a.R0, 0), a.goto("top")])
    assert a.decode(back)[1][3] == -2


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([a.goto("nowhere")], "unknown label"),
        ([a.Label("x"), a.Label("x")], "defined twice"),
        ([a.mov_imm(a.R0, 1 << 31)], "out of range"),
        ([a.mov_reg(11, a.R0)], "no register"),
    ],
)
def test_what_cannot_be_encoded_is_refused(items: list[a.Item], message: str) -> None:
    with pytest.raises(a.AsmError, match=message):
        a.assemble(items)


def test_signed32_keeps_the_bit_pattern() -> None:
    assert a.signed32(0xFFFFFFFF) == -1
    assert a.signed32(0x7FFFFFFF) == 0x7FFFFFFF
    assert struct.pack("<i", a.signed32(0xC0000201)) == struct.pack("<I", 0xC0000201)


# --- the program ----------------------------------------------------------------------


def test_probe_returns_unspec() -> None:
    assert bpf_prog.probe() == bytes.fromhex("b7000000ffffffff9500000000000000")
    assert run(bpf_prog.probe(), b"").result == bpf_prog.TC_ACT_UNSPEC


@pytest.mark.parametrize(("ends", "length", "count"), [(V4, 48, 48), (V6, 68, 59)])
def test_program_shape_and_constants(
    ends: tuple[tuple[str, int], tuple[str, int]], length: int, count: int
) -> None:
    code = bpf_prog.bytecode(direction(ends))
    insns = a.decode(code)
    assert len(insns) == count
    # the copy is as long as the Ethernet, IP and TCP bytes up to the flags
    assert (a.ALU64 | a.MOV | a.K, a.R4, 0, 0, length) in insns
    # the stack stores write the new MACs, in order
    stores = [imm for c, *_, imm in insns if c == a.ST | a.MEM | a.H]
    assert b"".join(v.to_bytes(2, "little") for v in stores) == SERVER_MAC + BACK_MAC
    # the redirect's ifindex, then its call, exit, and the pass path
    assert insns[-6:-4] == [(a.ALU64 | a.MOV | a.K, a.R1, 0, 0, 5), (0xB7, a.R2, 0, 0, 0)]
    assert insns[-4] == (a.JMP | a.CALL, 0, 0, 0, bpf_prog.BPF_FUNC_REDIRECT)
    assert insns[-3:] == [
        (a.JMP | a.EXIT, 0, 0, 0, 0),
        (0xB7, 0, 0, 0, -1),
        (a.JMP | a.EXIT, 0, 0, 0, 0),
    ]
    # every jump lands inside the program
    for pc, (c, *_, off, _imm) in enumerate(insns):
        if c & 0x07 in (a.JMP, a.JMP32) and c & 0xF0 not in (a.CALL, a.EXIT):
            assert 0 <= pc + 1 + off < len(insns)


@pytest.mark.parametrize("ends", [V4, V6], ids=["ipv4", "ipv6"])
def test_a_segment_of_the_connection_is_rewritten_and_redirected(
    ends: tuple[tuple[str, int], tuple[str, int]],
) -> None:
    frame = tcp_frame(ends)
    done = run(bpf_prog.bytecode(direction(ends)), frame)
    assert done.result == bpf_prog.TC_ACT_REDIRECT
    assert done.redirect == (5, 0)
    assert done.frame == SERVER_MAC + BACK_MAC + frame[12:]


@pytest.mark.parametrize("ends", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(
    "flags", [wire.SYN, wire.SYN | wire.ACK, wire.FIN | wire.ACK, wire.RST, wire.RST | wire.ACK]
)
def test_control_segments_go_to_the_proxy(
    ends: tuple[tuple[str, int], tuple[str, int]], flags: int
) -> None:
    frame = tcp_frame(ends, flags)
    done = run(bpf_prog.bytecode(direction(ends)), frame)
    assert (done.result, done.frame, done.redirect) == (bpf_prog.TC_ACT_UNSPEC, frame, None)


def _other_frames(ends: tuple[tuple[str, int], tuple[str, int]]) -> list[tuple[str, bytes]]:
    (src, sport), (dst, dport) = ends
    ip_at = 14
    frames = [
        ("reverse direction", tcp_frame((ends[1], ends[0]))),
        ("other source port", tcp_frame(((src, sport + 1), (dst, dport)))),
        ("other destination port", tcp_frame(((src, sport), (dst, dport + 1)))),
        ("other address", tcp_frame(((src, sport), ("192.0.2.9" if "." in src else "::9", dport)))),
        ("truncated", tcp_frame(ends)[: 14 + (20 if "." in src else 40) + 10]),
    ]
    base = bytearray(tcp_frame(ends))
    if "." in src:
        options = bytearray(base)
        options[ip_at] = 0x46
        frag = bytearray(base)
        frag[ip_at + 6] |= 0x20  # more fragments
        udp = bytearray(base)
        udp[ip_at + 9] = 17
        frames += [("ip options", bytes(options)), ("fragment", bytes(frag)), ("udp", bytes(udp))]
    else:
        ext = bytearray(base)
        ext[ip_at + 6] = 0  # a hop-by-hop options header first
        frames.append(("extension header", bytes(ext)))
    arp = bytearray(base)
    arp[12:14] = b"\x08\x06"
    frames.append(("other ethertype", bytes(arp)))
    return frames


@pytest.mark.parametrize("ends", [V4, V6], ids=["ipv4", "ipv6"])
def test_other_frames_go_to_the_proxy(ends: tuple[tuple[str, int], tuple[str, int]]) -> None:
    code = bpf_prog.bytecode(direction(ends))
    for what, frame in _other_frames(ends):
        done = run(code, frame)
        assert (done.result, done.frame) == (bpf_prog.TC_ACT_UNSPEC, frame), what
    assert run(code, tcp_frame(ends), vlan=True).result == bpf_prog.TC_ACT_UNSPEC


def test_bad_directions_are_refused() -> None:
    with pytest.raises(ValueError, match="one family"):
        bpf_prog.bytecode(direction((V4[0], V6[1])))
    with pytest.raises(ValueError, match="6 bytes"):
        bpf_prog.bytecode(dataclasses.replace(direction(V4), src_mac=b"\x02"))
    with pytest.raises(ValueError, match="ifindex"):
        bpf_prog.bytecode(dataclasses.replace(direction(V4), out_ifindex=0))


# --- detection at start ---------------------------------------------------------------


class Log:
    """Collects what the proxy logs: ``(event, fields)``."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def __getattr__(self, level: str) -> object:
        return lambda event, **fields: self.lines.append((event, fields))


def _fails(*_args: object) -> None:
    raise OSError(1, "Operation not permitted")


@pytest.mark.parametrize(
    ("tc_ok", "bpf_ok", "expected", "available"),
    [
        (True, True, (True, True), None),
        (True, False, (True, False), "mirrored"),
        (False, True, (False, False), None),
    ],
)
async def test_setup_detects_which_lane_the_kernel_offers(
    monkeypatch: pytest.MonkeyPatch,
    tc_ok: bool,
    bpf_ok: bool,
    expected: tuple[bool, bool],
    available: str | None,
) -> None:
    import proxy.__main__ as proxy_main
    from proxy import bpf_lane

    monkeypatch.setattr(proxy_main, "_express_setup", (lambda _names: None) if tc_ok else _fails)
    monkeypatch.setattr(proxy_main, "_express_teardown", lambda _names: None)
    monkeypatch.setattr(bpf_lane, "probe", (lambda _port: None) if bpf_ok else _fails)
    log = Log()
    args = proxy_main.parse_args(["--log-segments", "control"])
    assert await proxy_main._setup_express(args, log, ["mc0", "ms0"]) == expected
    unavailable = [fields for event, fields in log.lines if event == "express_unavailable"]
    if expected == (True, True):
        assert unavailable == []
    else:
        (only,) = unavailable  # one record, saying why
        assert "not permitted" in str(only["reason"])
        assert only.get("available") == available

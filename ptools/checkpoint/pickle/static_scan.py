"""A static pickle scanner: every global a stream names, found by reading its opcodes, never by unpickling.

The verdict of `inspect` comes from here, before anything is loaded. The scanner walks the opcodes of
every pickle in a buffer (protocols 0-5, several pickles one after another, trailing bytes after STOP)
with a symbolic stack and memo, so `STACK_GLOBAL` names built from memoised strings are resolved and
globals computed at load time are flagged. It keeps going where a real unpickler would stop on a
raising callable, a `NEXT_BUFFER` without buffers or a stack underflow, and after a stream it cannot
parse it sweeps the rest of the bytes for anything shaped like a global, so nothing a lenient loader
could reach is hidden. It also measures what would make loading dangerous for this process: nesting
depth (deep tuples crash `hash`), the largest memo index (the C unpickler sizes an array by it) and a
rough count of the objects a load would create.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

MAX_STACK = 1 << 20  # symbolic stack entries kept; a deeper stack is not a real checkpoint
MAX_MEMO = 1 << 21  # memo entries kept (values beyond it read as unknown)
MAX_STREAMS = 64  # pickles one after another in one region
MAX_RECORDED = 8  # offsets kept per global
DYNAMIC = ("<computed>", "STACK_GLOBAL")  # a global whose name is only known at load time


@dataclass
class StreamScan:
    """What one pickle stream names and how heavy it would be to load."""

    start: int
    end: int | None = None  # offset after STOP; None when the stream is broken
    error: str | None = None
    error_at: int = 0  # where the opcode that broke the stream starts
    protocol: int = 0
    globals: dict[tuple[str, str], int] = field(default_factory=dict)  # (module, name) -> uses
    offsets: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    wraps: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)  # partial -> what it wraps
    ext_codes: list[int] = field(default_factory=list)
    swept: bool = False  # names found by the sweep after a parse error
    limited: bool = False  # a scan limit ended the walk here: the rest was only swept (always reported)
    max_depth: int = 0
    max_memo: int = -1
    opcodes: int = 0
    objects: int = 0  # objects a load would create (upper bound)
    payload: int = 0  # bytes of string/bytes data a load would copy
    anomalies: int = 0  # stack underflows, missing marks, unknown memo keys (a real loader would stop)
    first_anomaly: int | None = None  # the opcode where a real unpickler would have raised
    persistent_ids: int = 0

    def add_global(self, module: str, name: str, offset: int) -> None:
        key = (module, name)
        self.globals[key] = self.globals.get(key, 0) + 1
        offs = self.offsets.setdefault(key, [])
        if len(offs) < MAX_RECORDED:
            offs.append(offset)

    @property
    def estimated_bytes(self) -> int:
        """Memory a full load would need, roughly (objects at ~100 bytes, plus string data)."""
        return self.objects * 100 + self.payload * 2


# Values on the symbolic stack, kept cheap: a number/None/bytes is 0; a string is a str; a global is a
# _Glob; a tuple is the tuple (depth, items); a mutable container or an object being built is the list
# [depth] (shared with the memo, so items added later deepen it everywhere).


class _Glob:
    __slots__ = ("key",)

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key


_EMPTY = (1, ())
_U2 = struct.Struct("<H").unpack_from
_I4 = struct.Struct("<i").unpack_from
_U4 = struct.Struct("<I").unpack_from
_U8 = struct.Struct("<Q").unpack_from


def _d(v: Any) -> int:
    t = type(v)
    return v[0] if t is list or t is tuple else 0


def _dmax(items: Any) -> int:
    d = 0
    for v in items:
        t = type(v)
        if (t is list or t is tuple) and v[0] > d:
            d = v[0]
    return d


class _Broken(Exception):
    pass


def scan_stream(data: Any, start: int = 0, end: int | None = None) -> StreamScan:
    """Walk one pickle from `start` to its STOP (or to where it breaks). `data`: bytes, memoryview or mmap."""
    end = len(data) if end is None else end
    out = StreamScan(start=start)
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    st: dict[str, Any] = {"memo_count": 0, "max_memo": -1, "anomalies": 0, "max_depth": 0, "first_anomaly": None}
    pos = start
    objects = payload = opcodes = 0
    max_depth = 0
    push = stack.append
    pop = stack.pop
    at = start

    def anomaly() -> None:
        if not st["anomalies"]:
            st["first_anomaly"] = at
        st["anomalies"] += 1

    def underflow() -> Any:
        anomaly()
        return 0

    def pop_mark() -> list[Any]:
        if not marks:
            anomaly()
            items = stack[:]
            stack.clear()
            return items
        m = marks.pop()
        items = stack[m:]
        del stack[m:]
        return items

    def memo_put(idx: int) -> None:
        if idx > st["max_memo"]:
            st["max_memo"] = idx
        if not stack:
            anomaly()
            return
        if idx not in memo:
            st["memo_count"] += 1
            if len(memo) >= MAX_MEMO:
                return
        memo[idx] = stack[-1]

    def memo_get(idx: int) -> Any:
        v = memo.get(idx)
        if v is None:
            anomaly()
            return 0
        return v

    def grow(items_depth: int) -> None:
        # An item added to the container on top of the stack (APPEND, SETITEM, BUILD...).
        if stack and type(stack[-1]) is list:
            d = items_depth + 1
            top = stack[-1]
            if d > top[0]:
                top[0] = d
                if d > st["max_depth"]:
                    st["max_depth"] = d

    def text_line(p: int) -> tuple[bytes, int]:
        nl = data.find(b"\n", p, end)
        if nl < 0:
            raise _Broken("truncated stream (no newline)")
        return bytes(data[p:nl]), nl + 1

    def set_global(module: Any, name: Any, at: int) -> _Glob:
        if type(module) is str and type(name) is str:
            out.add_global(module, name, at)
            return _Glob((module, name))
        out.add_global(*DYNAMIC, at)
        return _Glob(DYNAMIC)

    def sized(p: int, n: int) -> bytes:
        if n < 0 or p + n > end:
            raise _Broken("truncated stream")
        return bytes(data[p : p + n])

    try:
        while True:
            if pos >= end:
                raise _Broken("no STOP opcode (truncated stream)")
            op = data[pos]
            at = pos
            pos += 1
            # Most frequent first (torch's protocol-2 data.pkl); the hot ones are inlined.
            if op == 0x72:  # LONG_BINPUT
                if pos + 4 > end:
                    raise _Broken("truncated stream")
                idx = _U4(data, pos)[0]
                pos += 4
                if stack and idx not in memo and idx < MAX_MEMO:
                    memo[idx] = stack[-1]
                    st["memo_count"] += 1
                    if idx > st["max_memo"]:
                        st["max_memo"] = idx
                else:
                    memo_put(idx)
            elif op == 0x68:  # BINGET
                v = memo.get(data[pos]) if pos < end else None
                pos += 1
                push(v if v is not None else underflow())
            elif op == 0x4B:  # BININT1
                pos += 1
                push(0)
            elif op == 0x28:  # MARK
                marks.append(len(stack))
            elif op == 0x74:  # TUPLE
                if marks:
                    m = marks.pop()
                    items = tuple(stack[m:])
                    del stack[m:]
                else:
                    items = tuple(pop_mark())
                d = _dmax(items) + 1
                if d > max_depth:
                    max_depth = d
                push((d, items if len(items) <= 4 else ()))
                objects += 1 + len(items) // 8
            elif op == 0x52:  # REDUCE
                args = pop() if stack else underflow()
                func = pop() if stack else underflow()
                if type(func) is _Glob and type(args) is tuple:
                    for a in args[1]:
                        if type(a) is _Glob:
                            out.wraps.setdefault(func.key, set()).add(a.key)
                d = (args[0] if type(args) is tuple or type(args) is list else 0) + 1
                if d > max_depth:
                    max_depth = d
                push([d])
                objects += 1
            elif op == 0x29:  # EMPTY_TUPLE
                push(_EMPTY)
            elif op == 0x58:  # BINUNICODE
                if pos + 4 > end:
                    raise _Broken("truncated stream")
                n = _U4(data, pos)[0]
                push(sized(pos + 4, n).decode("utf-8", "surrogatepass"))
                pos += 4 + n
                objects += 1
                payload += n
            elif op == 0x51:  # BINPERSID
                if stack:
                    pop()
                push(0)
                out.persistent_ids += 1
            elif op == 0x89 or op == 0x88 or op == 0x4E:  # NEWFALSE, NEWTRUE, NONE
                push(0)
            elif op == 0x85 or op == 0x86 or op == 0x87:  # TUPLE1/2/3
                k = op - 0x84
                if len(stack) >= k:
                    items = tuple(stack[-k:])
                    del stack[-k:]
                else:
                    items = tuple(stack) + (0,) * (k - len(stack))
                    stack.clear()
                    anomaly()
                d = _dmax(items) + 1
                if d > max_depth:
                    max_depth = d
                push((d, items))
                objects += 1
            elif op == 0x6A:  # LONG_BINGET
                push(memo_get(_U4(sized(pos, 4), 0)[0]))
                pos += 4
            elif op == 0x75 or op == 0x65 or op == 0x90:  # SETITEMS, APPENDS, ADDITEMS
                items = pop_mark()
                grow(_dmax(items))
                objects += len(items)
            elif op == 0x7D or op == 0x5D or op == 0x8F:  # EMPTY_DICT, EMPTY_LIST, EMPTY_SET
                push([1])
                objects += 1
            elif op == 0x71:  # BINPUT
                memo_put(sized(pos, 1)[0])
                pos += 1
            elif op == 0x4A or op == 0x4D:  # BININT, BININT2
                pos += 4 if op == 0x4A else 2
                push(0)
            elif op == 0x63 or op == 0x69:  # GLOBAL, INST
                mod, pos = text_line(pos)
                name, pos = text_line(pos)
                g = set_global(mod.decode("latin-1"), name.decode("latin-1"), at)
                if op == 0x63:
                    push(g)
                else:
                    items = pop_mark()
                    push([_dmax(items) + 1])
                    objects += 1
            elif op == 0x93:  # STACK_GLOBAL
                name = pop() if stack else underflow()
                mod = pop() if stack else underflow()
                push(set_global(mod, name, at))
            elif op == 0x8C:  # SHORT_BINUNICODE
                n = sized(pos, 1)[0]
                push(sized(pos + 1, n).decode("utf-8", "surrogatepass"))
                pos += 1 + n
                objects += 1
                payload += n
            elif op == 0x94:  # MEMOIZE
                memo_put(st["memo_count"])
            elif op == 0x50:  # PERSID
                _, pos = text_line(pos)
                push(0)
                out.persistent_ids += 1
            elif op == 0x62 or op == 0x61:  # BUILD, APPEND
                v = pop() if stack else underflow()
                grow(_d(v))
            elif op == 0x73:  # SETITEM
                v = pop() if stack else underflow()
                k = pop() if stack else underflow()
                grow(max(_d(k), _d(v)))
                objects += 1
            elif op == 0x6C or op == 0x64 or op == 0x91:  # LIST, DICT, FROZENSET
                items = pop_mark()
                d = _dmax(items) + 1
                if d > max_depth:
                    max_depth = d
                push([d] if op != 0x91 else (d, ()))
                objects += 1 + len(items)
            elif op == 0x81 or op == 0x92:  # NEWOBJ, NEWOBJ_EX
                parts = [pop() if stack else underflow() for _ in range(2 if op == 0x81 else 3)]
                push([_dmax(parts[:-1]) + 1])
                objects += 1
            elif op == 0x6F:  # OBJ
                items = pop_mark()
                push([_dmax(items[1:]) + 1])
                objects += 1
            elif op == 0x2E:  # STOP
                if stack:
                    pop()
                else:
                    underflow()
                out.end = pos
                break
            elif op == 0x80:  # PROTO
                out.protocol = sized(pos, 1)[0]
                pos += 1
            elif op == 0x95:  # FRAME
                pos += 8
            elif op == 0x70:  # PUT
                text, pos = text_line(pos)
                memo_put(_memo_index(text))
            elif op == 0x67:  # GET
                text, pos = text_line(pos)
                push(memo_get(_memo_index(text)))
            elif op == 0x30:  # POP
                if marks and len(stack) == marks[-1]:
                    marks.pop()  # POP of a mark is how pickle.py discards one
                elif stack:
                    pop()
                else:
                    underflow()
            elif op == 0x31:  # POP_MARK
                pop_mark()
            elif op == 0x32:  # DUP
                push(stack[-1] if stack else underflow())
            elif op == 0x8A or op == 0x8B:  # LONG1, LONG4
                size = _I4(sized(pos, 4), 0)[0] if op == 0x8B else sized(pos, 1)[0]
                pos += 4 if op == 0x8B else 1
                sized(pos, size)
                pos += size
                push(0)
                payload += size
            elif op == 0x49 or op == 0x4C or op == 0x46:  # INT, LONG, FLOAT
                _, pos = text_line(pos)
                push(0)
            elif op == 0x47:  # BINFLOAT
                pos += 8
                push(0)
            elif op == 0x55 or op == 0x43 or op == 0x54 or op == 0x42:  # (SHORT_)BINSTRING, (SHORT_)BINBYTES
                short = op in (0x55, 0x43)
                n = sized(pos, 1)[0] if short else _I4(sized(pos, 4), 0)[0]
                pos += 1 if short else 4
                raw = sized(pos, n)
                pos += n
                # The restricted unpickler decodes Python 2 strings as latin-1: they can name a global.
                push(raw.decode("latin-1") if op in (0x55, 0x54) else 0)
                objects += 1
                payload += n
            elif op == 0x8D or op == 0x8E or op == 0x96:  # BINUNICODE8, BINBYTES8, BYTEARRAY8
                n = _U8(sized(pos, 8), 0)[0]
                pos += 8
                if n > end - pos:
                    raise _Broken(f"{n}-byte string runs past the end")
                push(sized(pos, n).decode("utf-8", "surrogatepass") if op == 0x8D else 0)
                pos += n
                objects += 1
                payload += n
            elif op == 0x53:  # STRING (protocol 0, quoted)
                text, pos = text_line(pos)
                push(_unquote(text))
                objects += 1
                payload += len(text)
            elif op == 0x56:  # UNICODE (protocol 0, raw-unicode-escape)
                text, pos = text_line(pos)
                push(text.decode("raw-unicode-escape", "replace"))
                objects += 1
                payload += len(text)
            elif op == 0x82 or op == 0x83 or op == 0x84:  # EXT1/2/4: a global from copyreg's extension registry
                n = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                code = int.from_bytes(sized(pos, n), "little", signed=n == 4)
                pos += n
                out.ext_codes.append(code)
                key = ("<extension registry>", f"code {code}")
                out.add_global(*key, at)
                push(_Glob(key))
            elif op == 0x97:  # NEXT_BUFFER: out-of-band data (a loader without buffers stops; we do not)
                push(0)
            elif op == 0x98:  # READONLY_BUFFER
                pass
            else:
                raise _Broken(f"unknown opcode 0x{op:02x} at offset {at}")
            opcodes += 1
            if not opcodes & 0xFFF and len(stack) > MAX_STACK:
                raise _Broken("stack too deep")
    except _Broken as e:
        out.error, out.error_at = str(e), at
    except (UnicodeDecodeError, ValueError, struct.error, IndexError, OverflowError) as e:
        out.error, out.error_at = f"{type(e).__name__} at offset {at}", at
    out.opcodes, out.objects, out.payload = opcodes, objects, payload
    out.max_depth = max(max_depth, st["max_depth"])
    out.max_memo, out.anomalies, out.first_anomaly = st["max_memo"], st["anomalies"], st["first_anomaly"]
    if out.end is None and out.error is None:
        out.error = "broken stream"
    return out


def _memo_index(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Broken("bad memo index") from None


def _unquote(text: bytes) -> str:
    if len(text) >= 2 and text[:1] == text[-1:] and text[:1] in (b"'", b'"'):
        text = text[1:-1]
    try:
        return text.decode("unicode-escape")
    except UnicodeDecodeError:
        return text.decode("latin-1")


# Shapes of a global outside a parseable stream: protocol 0/1 `c`/`i` with two lines, or two short
# unicode strings (optionally memoised) before STACK_GLOBAL.
_NAME = rb"[A-Za-z_][\w.]{0,200}"
_SWEEP_TEXT = re.compile(rb"[ci](" + _NAME + rb")\n(" + _NAME + rb")\n")
_SWEEP_STACK = re.compile(
    rb"(?:\x8c([\x01-\xff])|X([\x01-\xff])\x00\x00\x00)",
)


def sweep(data: Any, start: int, end: int | None = None) -> list[tuple[str, str, int]]:
    """Anything shaped like a global in bytes no parser got through: (module, name, offset)."""
    end = len(data) if end is None else end
    chunk = bytes(data[start:end])
    found: list[tuple[str, str, int]] = []
    for m in _SWEEP_TEXT.finditer(chunk):
        found.append((m.group(1).decode("latin-1"), m.group(2).decode("latin-1"), start + m.start()))
    # STACK_GLOBAL: <str module> [MEMOIZE|BINPUT n] <str name> [MEMOIZE|BINPUT n] \x93
    i = chunk.find(b"\x93")
    while i >= 0 and len(found) < 10_000:
        pair = _strings_before(chunk, i)
        if pair:
            found.append((pair[0], pair[1], start + i))
        i = chunk.find(b"\x93", i + 1)
    return found


def _strings_before(chunk: bytes, i: int) -> tuple[str, str] | None:
    """The two short strings right before a STACK_GLOBAL at `i`, if the bytes there are shaped so."""
    names: list[str] = []
    j = i
    for _ in range(2):
        if j >= 1 and chunk[j - 1] == 0x94:  # MEMOIZE
            j -= 1
        elif j >= 2 and chunk[j - 2] == 0x71:  # BINPUT n
            j -= 2
        found = None
        for n in range(1, min(j, 256)):
            s = j - n
            if s >= 2 and chunk[s - 2] == 0x8C and chunk[s - 1] == n:
                found = (s - 2, chunk[s:j])
                break
        if found is None:
            return None
        j, raw = found
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return None
    name, module = names
    if not re.fullmatch(_NAME.decode(), module) or not re.fullmatch(_NAME.decode(), name):
        return None
    return module, name


def scan_region(data: Any, start: int = 0, end: int | None = None) -> list[StreamScan]:
    """Every pickle from `start`: one after another while they parse; a broken one ends the walk, and the
    bytes after the break are swept for globals (reported on that stream, `swept=True`)."""
    end = len(data) if end is None else end
    streams: list[StreamScan] = []
    pos = start
    while pos < end and len(streams) < MAX_STREAMS:
        s = scan_stream(data, pos, end)
        streams.append(s)
        if s.end is None:
            for module, name, at in sweep(data, pos + 1, end):
                if (module, name) not in s.globals or at not in s.offsets.get((module, name), []):
                    s.add_global(module, name, at)
                    s.swept = True
            break
        pos = s.end
        if pos < end and not looks_like_stream(data, pos, end):
            # Trailing bytes after STOP that do not start another pickle: still swept.
            tail = StreamScan(start=pos, error="trailing bytes after the pickle")
            for module, name, at in sweep(data, pos, end):
                tail.add_global(module, name, at)
                tail.swept = True
            if tail.globals:
                streams.append(tail)
            break
    else:
        if pos < end and len(streams) >= MAX_STREAMS:
            # A loader calling pickle.load in a loop would go on: what it reaches is swept, and the cut reported.
            rest = StreamScan(start=pos, error=f"more than {MAX_STREAMS} pickles one after another", limited=True)
            for module, name, at in sweep(data, pos, end):
                rest.add_global(module, name, at)
                rest.swept = True
            streams.append(rest)
    return streams


def looks_like_stream(data: Any, pos: int, end: int) -> bool:
    """Whether the bytes at `pos` parse as a pickle up to STOP, or name a global before breaking."""
    probe = scan_stream(data, pos, min(end, pos + (1 << 26)))
    return probe.end is not None or bool(probe.globals)


def merged_globals(streams: list[StreamScan]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for s in streams:
        for k, n in s.globals.items():
            out[k] = out.get(k, 0) + n
    return out


_HEAD_TEXT = re.compile(rb"\(?[ci]" + _NAME + rb"\n")


def looks_like_pickle_head(head: bytes) -> bool:
    """A cheap test on a member's first bytes: PROTO 0-5, or a protocol 0/1 stream opening with a global
    or a container (what a payload hidden in tensor data or a non-pickle name would start with)."""
    if len(head) < 2:
        return False
    if head[0] == 0x80 and head[1] <= 5:
        return True
    if _HEAD_TEXT.match(head):
        return True
    if head[:1] in (b"(", b"]", b"}", b")"):
        probe = scan_stream(head + b"", 0)
        return probe.end is not None or bool(probe.globals) or probe.error_at >= len(head) - 16
    return False

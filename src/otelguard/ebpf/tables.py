"""Maps by fd: what the sensor reads and writes (drop counters, the budget, the cgroup scope).

A :class:`Table` wraps one map fd with ctypes key and value types rebuilt from the JSON type
descriptions BCC's front end gives for each table (``bpf_table_key_desc``/``leaf_desc``, kept in
the program cache), so the same code serves a program BCC just compiled and one loaded from the
cache. Cost: one ``bpf()`` syscall per lookup or update; per-CPU values come back as one slot
per possible CPU (each rounded up to 8 bytes, the kernel's layout).
"""

from __future__ import annotations

import ctypes
import json
import os
from typing import Any, Iterator, Optional, Union

from otelguard.ebpf import bpfsys
from otelguard.ebpf.bpfsys import MapInfo

CType = Any  # a ctypes type (scalar, Structure, Union or Array subclass)
_CDATA = (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._SimpleCData)

_SCALARS: dict[str, CType] = {
    "_Bool": ctypes.c_bool, "char": ctypes.c_char, "signed char": ctypes.c_byte,
    "unsigned char": ctypes.c_ubyte, "short": ctypes.c_short,
    "unsigned short": ctypes.c_ushort, "int": ctypes.c_int, "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long, "unsigned long": ctypes.c_ulong, "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong,
    "__int128": ctypes.c_ulonglong * 2, "unsigned __int128": ctypes.c_ulonglong * 2,
}


class TypeDescError(ValueError):
    """A BCC type description this module cannot rebuild."""


def ctype_from_desc(desc: Union[str, list[Any]]) -> CType:
    """The ctypes type for a BCC description: a scalar name, or ``[name, fields, kind]`` with
    kind ``struct``, ``struct_packed`` or ``union`` and each field ``[name, type]``,
    ``[name, type, [dims]]`` (an array) or ``[name, type, bits]`` (a bit field)."""
    if isinstance(desc, str):
        try:
            return _SCALARS[desc]
        except KeyError:
            raise TypeDescError(f"unknown scalar type {desc!r}") from None
    if not (isinstance(desc, list) and len(desc) == 3 and isinstance(desc[1], list)):
        raise TypeDescError(f"unexpected type description {desc!r}")
    name, fields, kind = desc
    out: list[tuple[Any, ...]] = []
    for f in fields:
        ftype = ctype_from_desc(f[1])
        if len(f) == 3 and isinstance(f[2], list):
            for dim in reversed(f[2]):
                ftype = ftype * int(dim)
            out.append((f[0], ftype))
        elif len(f) == 3 and isinstance(f[2], int):
            out.append((f[0], ftype, f[2]))
        else:
            out.append((f[0], ftype))
    base: Any = ctypes.Union if kind == "union" else ctypes.Structure
    attrs: dict[str, Any] = {"_fields_": out}
    if kind == "struct_packed":
        attrs["_pack_"] = 1
    return type(str(name) or "anon", (base,), attrs)


def parse_desc(text: str) -> CType:
    try:
        return ctype_from_desc(json.loads(text))
    except (json.JSONDecodeError, TypeError, IndexError) as exc:
        raise TypeDescError(f"bad type description {text[:80]!r}: {exc}") from exc


class Table:
    """One map: ``lookup``/``update``/``delete``/``items``, ``percpu_sum`` for per-CPU counters,
    and ``set_cgroup`` for a cgroup array slot. Does not own the fd (the program closes it)."""

    def __init__(self, name: str, fd: int, key_desc: str, leaf_desc: str,
                 info: Optional[MapInfo] = None) -> None:
        self.name = name
        self.fd = fd
        self.info = info or bpfsys.map_info(fd)
        self.Key = parse_desc(key_desc)
        self.Leaf = parse_desc(leaf_desc)
        self.percpu = self.info.type in bpfsys.PERCPU_MAPS
        self._slot = (self.info.value_size + 7) // 8 * 8
        self._ncpu = bpfsys.possible_cpus() if self.percpu else 1
        if ctypes.sizeof(self.Key) != self.info.key_size and self.info.key_size:
            raise TypeDescError(f"{name}: key type is {ctypes.sizeof(self.Key)} bytes, the map's "
                                f"{self.info.key_size}")

    def _key(self, key: Any) -> ctypes.Array[ctypes.c_char]:
        raw = key if isinstance(key, _CDATA) else self.Key(key)
        return ctypes.create_string_buffer(bytes(raw), self.info.key_size)

    def _value_buffer(self) -> ctypes.Array[ctypes.c_char]:
        return ctypes.create_string_buffer(self._slot * self._ncpu if self.percpu
                                           else self.info.value_size)

    def _decode(self, buf: ctypes.Array[ctypes.c_char]) -> Any:
        if not self.percpu:
            return self.Leaf.from_buffer_copy(buf.raw[:ctypes.sizeof(self.Leaf)])
        raw = buf.raw
        return [self.Leaf.from_buffer_copy(raw[i * self._slot:i * self._slot
                                               + ctypes.sizeof(self.Leaf)])
                for i in range(self._ncpu)]

    def lookup(self, key: Any) -> Optional[Any]:
        """The value (a list, one per possible CPU, for a per-CPU map), None when absent."""
        buf = self._value_buffer()
        return self._decode(buf) if bpfsys.map_lookup(self.fd, self._key(key), buf) else None

    def update(self, key: Any, value: Any) -> None:
        raw = value if isinstance(value, _CDATA) else self.Leaf(value)
        data = bytes(raw)
        if self.percpu:
            data = b"".join(data.ljust(self._slot, b"\0") for _ in range(self._ncpu))
        bpfsys.map_update(self.fd, self._key(key),
                          ctypes.create_string_buffer(data, len(data)))

    def delete(self, key: Any) -> bool:
        return bpfsys.map_delete(self.fd, self._key(key))

    def keys(self) -> Iterator[Any]:
        size = max(1, self.info.key_size)
        prev: Optional[ctypes.Array[ctypes.c_char]] = None
        while True:
            nxt = ctypes.create_string_buffer(size)
            if not bpfsys.map_next_key(self.fd, prev, nxt):
                return
            yield self.Key.from_buffer_copy(nxt.raw[:ctypes.sizeof(self.Key)])
            prev = nxt

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) pairs; entries deleted while iterating are skipped."""
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def percpu_sum(self, key: Any) -> int:
        """The sum over CPUs of a per-CPU scalar counter (0 when absent)."""
        values = self.lookup(key)
        if values is None:
            return 0
        if not self.percpu:
            return int(getattr(values, "value", values))
        return int(sum(getattr(v, "value", v) for v in values))

    def set_cgroup(self, index: int, path: str) -> None:
        """Point slot ``index`` of a cgroup array at the cgroup v2 directory ``path``."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            bpfsys.map_update(self.fd, self._key(index),
                              ctypes.create_string_buffer(fd.to_bytes(4, "little"), 4))
        finally:
            os.close(fd)

"""Evasion decode without the kernel: hand-built io_uring records."""

from __future__ import annotations

from otelguard import semconv
from otelguard.ebpf import evasion
from otelguard.ebpf.evasion import EvasionProbe, SetupRecord, SubmitRecord, setup_flag_names
from otelguard.ebpf.probe import ProbeConfig
from tests.support.decoding import RecordingContext, header

P = EvasionProbe()


def test_submit_record() -> None:
    r = SubmitRecord()
    r.h = header(evasion.T_URING_SUBMIT)
    r.opcode, r.sq_thread = 16, 1
    ev = P.decode(evasion.T_URING_SUBMIT, bytes(r), RecordingContext())
    assert ev is not None and ev.attrs[semconv.IO_URING_OPCODE] == "IORING_OP_CONNECT"
    assert ev.syscall == "" and "SQPOLL" in ev.body


def test_setup_record_flags() -> None:
    r = SetupRecord()
    r.h = header(evasion.T_URING_SETUP, ret=5)
    r.entries, r.flags, r.params_ok = 8, 2 | 1 << 12, 1
    ev = P.decode(evasion.T_URING_SETUP, bytes(r), RecordingContext())
    assert ev is not None and ev.name == semconv.EV_IO_URING_SETUP
    assert ev.attrs[semconv.IO_URING_SETUP_FLAGS] == "IORING_SETUP_SQPOLL|IORING_SETUP_SINGLE_ISSUER"
    assert ev.attrs[semconv.FILE_FD] == 5
    assert setup_flag_names(1 << 30) == hex(1 << 30)


def test_short_records_and_render() -> None:
    r = SubmitRecord()
    r.h = header(evasion.T_URING_SUBMIT)
    assert P.decode(evasion.T_URING_SUBMIT, bytes(r)[:-1], RecordingContext()) is None
    assert P.decode(99, bytes(r), RecordingContext()) is None
    text = P.render(ProbeConfig(), frozenset({"io_uring:io_uring_submit_req"}))
    assert "#define OG_EV_HAVE_SUBMIT 1" in text and "#define OG_EV_HAVE_SETUP 0" in text

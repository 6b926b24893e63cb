"""user.* and group.*: the process's credentials and its login (audit) user."""

from __future__ import annotations

from typing import Optional

from otelguard import semconv as S
from otelguard.processors.detection.fields.registry import (
    AttrField, FieldType as T, as_int, define, unavailable,
)
from otelguard.processors.detection.fields.view import EventView


def _loginuid(ev: EventView, _arg: Optional[str]) -> Optional[int]:
    v = as_int(ev.attr(S.PROCESS_LOGIN_UID))
    if v is None:
        return None
    return -1 if v in (4294967295, -1) else v


def _loginname(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    luid = _loginuid(ev, None)
    if luid is None or luid < 0:
        return None
    if luid == 0:
        return "root"
    if luid == as_int(ev.attr(S.PROCESS_USER_ID)):
        v = ev.attr(S.PROCESS_USER_NAME)
        return v if isinstance(v, str) else None
    return None


define("user.uid", T.NUM, S.PROCESS_USER_ID, AttrField(S.PROCESS_USER_ID), (S.PROCESS_USER_ID,))
define("user.name", T.STR, S.PROCESS_USER_NAME, AttrField(S.PROCESS_USER_NAME),
       (S.PROCESS_USER_NAME,))
define("user.loginuid", T.NUM, f"{S.PROCESS_LOGIN_UID} (-1 when unset)", _loginuid,
       (S.PROCESS_LOGIN_UID,))
define("user.loginname", T.STR, "root for login uid 0, user.name when login uid = uid", _loginname,
       (S.PROCESS_LOGIN_UID, S.PROCESS_USER_NAME))
unavailable("user.shell", T.STR, "the agent reads no passwd database")
unavailable("user.homedir", T.STR, "the agent reads no passwd database")
define("group.gid", T.NUM, S.PROCESS_GROUP_ID, AttrField(S.PROCESS_GROUP_ID), (S.PROCESS_GROUP_ID,))
define("group.name", T.STR, S.PROCESS_GROUP_NAME, AttrField(S.PROCESS_GROUP_NAME),
       (S.PROCESS_GROUP_NAME,))

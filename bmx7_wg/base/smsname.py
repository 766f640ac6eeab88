"""The SMS name rule: which names bmx7 publishes an SMS under."""

from __future__ import annotations

import re

# The SMS name an announcement is published and read under. bmx7 refuses `syncSms` names
# of 16 or more characters (measured), checks each with validate_name_string (tools.c:
# A-Z, a-z, 0-9, "-" and "_", and "." but not first or last), and reads `syncSms=-NAME`
# as "stop publishing NAME", so a name cannot start with "-" either.
SMS_NAME_MAX = 15
_SMS_NAME = re.compile(r"(?!-)(?!\.)[A-Za-z0-9_.-]{1,15}(?<!\.)")


def sms_name_problem(name: str) -> str | None:
    """Why bmx7 would not publish an SMS under `name`, or None: the one rule for the
    configuration (`[bmx7] announce`) and for every use of the name in mesh/bmx7.py."""
    if _SMS_NAME.fullmatch(name):
        return None
    return (
        f"is not 1-{SMS_NAME_MAX} characters of A-Z, a-z, 0-9, '_', '.', '-' "
        "(not starting with '-' or '.', not ending with '.'), as bmx7 requires"
    )

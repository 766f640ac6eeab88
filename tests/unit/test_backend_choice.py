"""Which WireGuard implementation an interface gets (engine.choose_implementation)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bmx7_wg.config.model import Backend, InterfaceConfig
from bmx7_wg.engine import choose_implementation
from bmx7_wg.errors import BackendUnavailable
from bmx7_wg.plan.state import Implementation, ObservedInterface


def iface(backend: Backend) -> InterfaceConfig:
    return InterfaceConfig(name="wg0", private_key_file="/k", backend=backend)


def existing(implementation: Implementation | None) -> ObservedInterface | None:
    if implementation is None:
        return None
    return ObservedInterface(
        name="wg0", ifindex=7, implementation=implementation, managed=True, mtu=1420, up=True,
        addresses=frozenset(), routes=frozenset(), device=None,
    )


def probe(answer: bool, asked: list[str], name: str) -> Callable[[], bool]:
    def ask() -> bool:
        asked.append(name)
        return answer

    return ask


@pytest.mark.parametrize(
    ("backend", "have", "kernel", "userspace", "chosen"),
    [
        # auto: what the interface runs on now, else the kernel, else wireguard-go
        ("auto", None, True, True, "kernel"),
        ("auto", None, False, True, "userspace"),
        ("auto", "userspace", True, True, "userspace"),
        ("auto", "kernel", False, False, "kernel"),
        # asked for by name: the one named, if it is there or the interface runs on it
        ("kernel", None, True, False, "kernel"),
        ("kernel", "kernel", False, False, "kernel"),
        ("kernel", "userspace", True, True, "kernel"),
        ("userspace", None, True, True, "userspace"),
        ("userspace", "userspace", False, False, "userspace"),
        ("userspace", "kernel", False, True, "userspace"),
    ],
)
def test_choice(
    backend: Backend, have: Implementation | None, kernel: bool, userspace: bool, chosen: str
) -> None:
    asked: list[str] = []
    got = choose_implementation(
        iface(backend), existing(have), probe(kernel, asked, "kernel"), probe(userspace, asked, "userspace")
    )
    assert got == chosen
    if backend == "auto" and have is not None:
        assert asked == []  # an existing interface keeps its kind without probing


@pytest.mark.parametrize(
    ("backend", "have", "message"),
    [
        ("auto", None, "no WireGuard implementation available: the kernel has no WireGuard module "
                       "and wireguard-go is not installed (apt install wireguard-go)"),
        ("kernel", None, 'backend = "kernel" but this kernel has no WireGuard support'),
        ("kernel", "userspace", 'backend = "kernel" but this kernel has no WireGuard support'),
        ("userspace", None, 'backend = "userspace" but wireguard-go is not installed'),
        ("userspace", "kernel", 'backend = "userspace" but wireguard-go is not installed'),
    ],
)
def test_none_available_says_what_to_install(
    backend: Backend, have: Implementation | None, message: str
) -> None:
    asked: list[str] = []
    with pytest.raises(BackendUnavailable) as info:
        choose_implementation(
            iface(backend), existing(have), probe(False, asked, "kernel"), probe(False, asked, "userspace")
        )
    assert str(info.value).startswith(f"interface wg0: {message}")
    assert info.value.exit_code == 3

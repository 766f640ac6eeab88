"""What the due timers make the service do (service/due.py): a step, a full reconcile,
a reload first, or nothing while an `apply --confirm` waits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bmx7_wg.pending import Pending
from bmx7_wg.service.due import CONFIRM_RECHECK, ConfirmWait, Due, Work
from bmx7_wg.service.schedule import (
    CONFIRM,
    EVENTS,
    GRACE,
    LINKS,
    MESH,
    METRICS,
    PERIODIC,
    PROBE,
    RELOAD,
    RETRY,
    Schedule,
)
from tests.logs import Heard, attached


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def work(due: dict[str, list[str]], *, links: str | None = None, bmx7: str | None = None,
         reloaded: bool = False) -> Work:
    return Due.of(due).work(links_changed=links, bmx7_changed=bmx7, reloaded=reloaded)


def test_changed_announcements_are_a_step() -> None:
    assert work({MESH: ["mesh announcements changed"]}) == Work("step", ("mesh announcements changed",))


def test_an_ended_grace_is_a_step_after_bmx7_was_asked() -> None:
    due = Due.of({GRACE: ["mesh grace period ended"]})
    assert due.probe  # a grace ends only while bmx7 answers: ask it first
    assert due.work(links_changed=None, bmx7_changed=None, reloaded=False).kind == "step"
    # bmx7 stopped answering meanwhile: a full reconcile pauses every hold.
    assert due.work(links_changed=None, bmx7_changed="bmx7 stopped answering", reloaded=False) == Work(
        "full", ("mesh grace period ended", "bmx7 stopped answering")
    )


@pytest.mark.parametrize("key", [EVENTS, RETRY, PERIODIC])
def test_any_other_reason_with_announcements_is_a_full_reconcile(key: str) -> None:
    decided = work({MESH: ["mesh announcements changed"], key: ["why"]})
    assert decided.kind == "full"
    assert set(decided.reasons) == {"mesh announcements changed", "why"}


def test_the_periodic_check_reads_every_announcement_afresh() -> None:
    assert work({PERIODIC: ["periodic check"]}) == Work("full", ("periodic check",), read_all=True)
    assert not work({EVENTS: ["x"]}).read_all


def test_links_and_probes_cost_a_reconcile_only_when_something_differs() -> None:
    assert Due.of({LINKS: ["a managed interface changed"]}).check_links
    assert work({LINKS: ["a managed interface changed"]}) == Work("nothing")
    assert work({PROBE: ["look at bmx7"]}) == Work("nothing")
    assert work({LINKS: ["x"]}, links="a managed interface changed outside bmx7-wg") == Work(
        "full", ("a managed interface changed outside bmx7-wg",)
    )
    assert work({PROBE: ["look at bmx7"]}, bmx7="bmx7 restarted") == Work("full", ("bmx7 restarted",))
    # A link difference beside a mesh change: no step can mend the links.
    assert work({MESH: ["m"], LINKS: ["l"]}, links="changed outside").kind == "full"


def test_a_reload_reconciles_only_if_there_is_a_reason_and_never_by_a_step() -> None:
    assert Due.of({RELOAD: ["SIGHUP"]}).reload
    assert work({RELOAD: ["SIGHUP"]}) == Work("nothing")
    assert work({RELOAD: ["SIGHUP"]}, reloaded=True) == Work("full", ("configuration changed",))
    assert work({RELOAD: ["configuration file written"], MESH: ["mesh announcements changed"]}) == Work(
        "full", ("mesh announcements changed",)
    )
    # The new configuration is the first reason.
    assert work({RELOAD: ["w"], EVENTS: ["trust changed"]}, reloaded=True).reasons == (
        "configuration changed",
        "trust changed",
    )


def test_timers_that_are_no_reason_reconcile_nothing() -> None:
    assert work({METRICS: ["write the metrics"], CONFIRM: ["apply --confirm waits"]}) == Work("nothing")


def claim(pid: int) -> Pending:
    return Pending(pid=pid, started=1, deadline=0, config="/etc/bmx7-wg.toml")




@pytest.fixture
def heard() -> Iterator[Heard]:
    """What service/due.py logs (the package's logger may not propagate: logsetup)."""
    with attached("bmx7_wg.service.due", Heard()) as handler:
        yield handler


def test_while_an_apply_confirm_waits_everything_due_waits_and_comes_back_at_its_end(heard: Heard) -> None:
    clock = Clock()
    schedule = Schedule(clock)
    wait = ConfirmWait()
    first = {MESH: ["mesh announcements changed"], RETRY: ["retry after a failed apply"]}
    assert wait.defer(first, claim(4242), schedule)
    assert schedule.due() == {}
    clock.now += CONFIRM_RECHECK
    later = schedule.due()
    assert later == {CONFIRM: ["apply --confirm waits"]}  # it looks again, and again
    later[MESH] = ["mesh announcements changed", "more"]
    assert wait.defer(later, claim(4242), schedule)
    # The wait ended: what waited is due with a reload (the configuration may be the old
    # one again) and a full reconcile.
    schedule.at(RETRY, clock.now + 5, "retry after a failed apply")  # set again meanwhile
    clock.now += CONFIRM_RECHECK
    now = schedule.due()
    assert not wait.defer(now, None, schedule)
    assert now == {
        MESH: ["mesh announcements changed", "more"],
        RETRY: ["retry after a failed apply"],
        RELOAD: ["apply --confirm ended"],
        EVENTS: ["apply --confirm ended"],
    }
    assert schedule.next() is None  # the retry timer is not run twice
    assert work(now, reloaded=True).kind == "full"
    said = [r.getMessage() for r in heard.records]
    assert said == [
        "apply --confirm (pid 4242) is applying /etc/bmx7-wg.toml: the service changes nothing until it ends",
        "apply --confirm (pid 4242) ended; the service goes on",
    ]
    # Nothing waits: nothing is added.
    again: dict[str, list[str]] = {EVENTS: ["x"]}
    assert not wait.defer(again, None, schedule)
    assert again == {EVENTS: ["x"]}

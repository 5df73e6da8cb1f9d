"""The crash campaign, short: 3 SIGKILLs of a busy server, then every workflow checked.

The full run (30 kills and more) is `scripts/crash_campaign.sh`; see tests/crash_campaign.py
for what is started, how clients retry, and what is checked.

    .venv/bin/pytest tests/test_crash_campaign.py -q -s        # -s prints the summary
    CRASH_CAMPAIGN_KILLS=10 .venv/bin/pytest tests/test_crash_campaign.py   # longer
"""

import os

import pytest

from tests.crash_campaign import run_campaign
from tests.support import ThrowawayPostgres, unique_id

pytestmark = pytest.mark.needs_own_server


@pytest.fixture
def campaign_database(postgres: ThrowawayPostgres | None, postgres_url: str) -> str:
    """A database of its own, so no other server takes the killed server's workflows."""
    if postgres is None:
        return postgres_url
    return postgres.create_database(unique_id("campaign").replace("-", "_"))


def test_random_kills_lose_and_double_nothing(campaign_database: str) -> None:
    """SIGKILLs of a busy server leave every workflow finished, every stream entry, event and
    acknowledged message exactly once (verify_workflow raises on the first miss).

    Each kill waits until a long workflow of every kind is running with steps to go, and
    run_campaign checks afterwards that DBOS recovered each of them: every kill hit every kind.
    """
    kills = int(os.environ.get("CRASH_CAMPAIGN_KILLS", "3"))
    report = run_campaign(campaign_database, kills, per_kill=2)
    print(report.summary())  # noqa: T201 - shown with -s
    assert report.kills == kills, report.summary()
    # Per kill: 2 workflows of each kind, plus a target of each kind (more if one was replaced).
    assert report.checked.workflows == (2 + 1) * 3 * kills + report.replaced_targets, (
        report.summary()
    )
    assert len(report.targets) == kills, report.summary()
    assert all(len(targets) == 3 for targets in report.targets), report.targets
    assert len(report.hit_kinds) == 3, f"kills did not hit every kind: {report.summary()}"

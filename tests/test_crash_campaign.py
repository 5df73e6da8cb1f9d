"""The crash campaign, short: 3 random SIGKILLs of a busy server, then every workflow checked.

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
    """SIGKILLs at random moments leave every workflow finished, every stream entry, event and
    acknowledged message exactly once (verify_workflow raises on the first miss)."""
    kills = int(os.environ.get("CRASH_CAMPAIGN_KILLS", "3"))
    report = run_campaign(campaign_database, kills, per_kill=2)
    print(report.summary())  # noqa: T201 - shown with -s
    assert report.kills == kills, report.summary()
    assert report.checked.workflows == 2 * 3 * kills, report.summary()
    assert len(report.hit_kinds) == 3, f"kills did not hit every kind: {report.summary()}"

"""Small pieces of the daily steps that need no Prefect."""

from datetime import date, datetime, timezone

from reporting.daily import previous_business_date


def test_scheduled_runs_report_the_previous_day_of_the_schedule_zone():
    at = datetime(2026, 11, 25, 0, 30, tzinfo=timezone.utc)
    assert previous_business_date("UTC", at) == date(2026, 11, 24)
    # 00:30 UTC is still the 24th in New York: its previous day is the 23rd
    assert previous_business_date("America/New_York", at) == date(2026, 11, 23)
    assert previous_business_date("Asia/Tokyo", at) == date(2026, 11, 24)

"""SQL fragments shared by the funnel and the uplift queries (one definition of "opened", "converted")."""

from __future__ import annotations

__all__ = ["ATTRIBUTED", "CLICKS", "HORIZON_DAYS", "OPENS", "purchase_window"]

#: Days after a send (or a holdout decision's send time) in which a purchase counts as a conversion.
HORIZON_DAYS = 14


def _by_send(event_type: str, simulated_only: str) -> str:
    # One row per send_id that has at least one such event; only_simulated says whether every one
    # of them came from the seeded simulation (then the count is shown as simulated).
    return f"""SELECT properties->>'send_id' AS send_id, bool_and({simulated_only}) AS only_simulated
               FROM events
               WHERE event_type = '{event_type}' AND properties->>'send_id' IS NOT NULL
               GROUP BY 1"""


#: Sends with a ``push_open`` event.
OPENS = _by_send("push_open", "simulated")
#: Sends with a ``push_click`` event.
CLICKS = _by_send("push_click", "simulated")
#: Sends with a ``conversion`` event; simulated incremental conversions carry ``grounded: false``.
ATTRIBUTED = _by_send("conversion", "simulated OR coalesce(properties->>'grounded', 'true') = 'false'")


def purchase_window(event: str, start: str) -> str:
    """Condition: ``event`` is a real purchase in the ``HORIZON_DAYS`` after ``start``.

    The window is (start, start + 14 days], the same one the engagement simulation grounds its
    conversions on, so a simulated "grounded" conversion and a real purchase agree.
    """
    return (f"{event}.event_type = 'purchase' AND NOT {event}.simulated "
            f"AND {event}.ts > {start} AND {event}.ts <= {start} + INTERVAL {HORIZON_DAYS} DAY")

"""How old the prices a command shows are: ages in days, the notes and the one warning line.

Pure and light (datetime only); `prov quote` and `prov prices show` call it on what they show.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from provisioner.core.offer import utc_today

#: Default of --max-price-age: a shown price older than this many days gives a warning.
DEFAULT_MAX_PRICE_AGE_DAYS = 90


def price_date_notes(
    used: Iterable[tuple[str, str | None, Sequence[str]]],
    *,
    max_age_days: int,
    source: str | None = None,
    today: date | None = None,
) -> tuple[list[str], list[str]]:
    """(notes, warnings) about the dates of the prices a command shows.

    ``used`` holds (cloud, prices_as_of, flags) of each price shown. The notes give the oldest
    price shown and its age; a warning names every cloud whose shown prices are undated or
    older than ``max_age_days``. ``source`` names a --prices file instead of the snapshot.
    """
    # here, not at the top: every command's options read the default above (prov fit would
    # pay ~10 ms more to start for the offers module it never uses)
    from pricing.offers import LIVE_FLAG, REFRESHABLE, SNAPSHOT_DATE

    today = today or utc_today()
    notes: list[str] = []
    warnings: list[str] = []
    dated: dict[str, list[date]] = {}
    undated: dict[str, int] = {}
    live: set[str] = set()
    total = 0
    for cloud, as_of, flags in used:
        total += 1
        if LIVE_FLAG in flags:
            live.add(cloud)
        if as_of:
            dated.setdefault(cloud, []).append(date.fromisoformat(as_of))
        else:
            undated[cloud] = undated.get(cloud, 0) + 1
    if not total:
        return notes, warnings
    origin = (
        f"prices from {source}"
        if source
        else (
            f"embedded price snapshot (taken into prov {SNAPSHOT_DATE})"
            + (f" + live prices of {', '.join(sorted(live))}" if live else "")
        )
    )
    all_dates = [d for ds in dated.values() for d in ds]
    if all_dates:
        oldest = min(all_dates)
        notes.append(f"{origin}; oldest price shown {oldest} ({(today - oldest).days} days old)")
    else:
        notes.append(f"{origin}; no price shown carries a date")
    parts = []
    if undated:
        names = ", ".join(sorted(undated))
        parts.append(f"{sum(undated.values())} undated ({names}: age unknown)")
    old: dict[str, int] = {}  # cloud -> age in days of its oldest stale price
    n_old = 0
    for cloud, days in sorted(dated.items()):
        stale = [d for d in days if (today - d).days > max_age_days]
        if stale:
            n_old += len(stale)
            old[cloud] = (today - min(stale)).days
    if old:
        ages = ", ".join(f"{c} {d} d" for c, d in old.items())
        parts.append(f"{n_old} older than --max-price-age {max_age_days} days ({ages})")
    if parts:
        fresh = sorted(c for c in set(old) | set(undated) if c in REFRESHABLE)
        # comma-separated, as the command takes them: a '|' would be a shell pipe when pasted
        hint = f"; refresh: prov prices refresh --cloud {','.join(fresh)}" if fresh else ""
        warnings.append(f"of {total} prices shown, " + " and ".join(parts) + hint)
    return notes, warnings

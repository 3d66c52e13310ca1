"""Results: the Parquet store and everything that reads it (tables, fits, reports, cross-host comparison).

Nothing here touches Ray or plans: these modules take rows (dicts) and write text and plots, so a user's
own notebook can call them on any store.
"""

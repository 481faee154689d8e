"""The watching and claiming side of ``dicomdrop watch``.

``watch`` turns file events and periodic rescans into candidate drop names, ``settle`` decides
when a drop is complete, ``claim`` moves it into ``work/<job>/`` exactly once, ``recovery``
finishes or rolls back what a crash left half done, and ``service`` runs claimed jobs in a
process pool. ``metrics`` and ``http`` expose counters for monitoring.
"""

"""Delivery of verified outputs: the outbox archive, and network targets (C-STORE, STOW-RS).

Only bytes that passed verification are ever handed to a sender: the pipeline stages them in
the outgoing folder after ``verify`` and records one row per target and instance in the store;
the delivery worker sends them, records each answer, retries targets that are down and
quarantines what a target refuses.
"""

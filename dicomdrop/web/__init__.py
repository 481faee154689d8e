"""The steward console: a small server-rendered web application over the library functions the
command line uses (holds, pending matches, re-identification, audit, status).

Nothing here implements a decision of its own: every action calls the same function as its CLI
command, with the console user as the actor, so the audit log reads the same whichever was used.
"""

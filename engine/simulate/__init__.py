"""Seeded simulations for the sandbox demo: who has the app and consents, and how users react to pushes.

Everything written here is flagged ``simulated`` (or lives in ``sim_*`` tables) and shown as such.
"""

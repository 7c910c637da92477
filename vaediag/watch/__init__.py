"""The watchdog: policies that decide kl_weight, a supervisor that runs training, a journal.

Import the pieces you need from their modules; this package imports nothing heavy on its own.
"""

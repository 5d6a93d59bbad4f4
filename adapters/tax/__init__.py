"""Taxation (税务局): employer bands and individual income tax withholding."""

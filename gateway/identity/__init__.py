"""Identifiers of persons (GB 11643-1999) and employers (GB 32100-2015)."""

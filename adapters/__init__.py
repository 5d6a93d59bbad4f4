"""Agency adapters: five agencies' native data behind one contract (see adapters.contract)."""

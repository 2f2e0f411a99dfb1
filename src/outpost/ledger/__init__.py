"""The cost ledger: prices, settling a finished dispatch into ledger rows, storage accrual, and metrics."""

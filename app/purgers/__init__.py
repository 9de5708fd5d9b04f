"""Purgers: one module per store, each behind the protocol in :mod:`app.purgers.base`."""

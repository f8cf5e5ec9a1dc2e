"""``pacsctl``: the pacsd control-plane command line (the only part of pacsd.client
that needs click)."""

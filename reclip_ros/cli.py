"""Placeholder, replaced below."""


def run_entry_point(name, argv):
    return 0

"""Test helpers (imported by the tests; conftest.py keeps only fixtures): real brokers, serial lines,
the appliance under supervisord, a fake AMMP API, and the paths the tests share."""

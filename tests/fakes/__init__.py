"""Fakes for tests: loopback servers speaking providers' wire formats, and a fake clock."""

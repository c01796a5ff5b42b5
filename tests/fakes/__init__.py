"""Fakes for tests: real servers on loopback that speak providers' wire formats, and a fake clock."""

"""Tests against a real etcd + kube-apiserver (see docs/local-cluster.md)."""

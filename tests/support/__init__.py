"""Helpers the tests share: free ports, temp dirs, starting and stopping processes."""

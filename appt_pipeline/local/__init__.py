"""The local stack: the demo, ``dev`` and the provider simulators wired to the shipped sample."""

"""bakery flows: the image pipeline and its schedules, and the ``bake`` command."""

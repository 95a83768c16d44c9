"""Everything that knows Docker: the engine client, test containers, images and their stages (local tags and
registry), usage for retention, leftovers for the sweep. The only place the docker SDK is imported."""

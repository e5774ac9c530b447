"""Scene I/O, datasets, transforms, collate and the synthetic scene generator."""

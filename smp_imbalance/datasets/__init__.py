"""Dataset adapters that speak albumentations. Importing this package registers their names."""

"""The plan document (`prov quote --json`): its models and the re-check of a plan read back."""

"""Built-in recipes: one YAML file per (target, precision), loaded by ``edgevit.recipe``."""

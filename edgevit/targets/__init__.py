"""Per-target export: each module turns a deploy-form model into artifact bytes plus an audit."""

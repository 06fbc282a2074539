"""Built-in device profiles: one YAML file per device, loaded by ``edgevit.bench.devices``."""

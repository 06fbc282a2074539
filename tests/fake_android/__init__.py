"""A fake Android phone for the adb tests: an ``adb`` executable, the phone's own tools, and host stand-ins
for the runner binaries that print the real runners' log formats while running the real models."""

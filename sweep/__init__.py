"""Plans and axes, expansion and validation, the Ray Tune runner, the result store and reports."""
